"""The packaged JSON Schemas and the validator accept and reject the same records.

Every corpus sample not marked ``validator_only`` is checked with ``jsonschema``'s
Draft202012Validator (no format checking: UUIDs and timestamps are ``pattern``s) and with
``decode_record``; they must agree on valid versus invalid. The marked samples are the
rules listed as validator-only in docs/events.md; for them only the validator is checked.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from pipeline.contract import (
    VALIDATOR_REASONS,
    Analysis,
    ApiCall,
    Event,
    EventKind,
    Reason,
    SystemLog,
    decode_record,
    load_schema,
)
from tests.unit.contract_corpus import CORPUS, NOW_MS, VALIDATOR_ONLY_RULES, Sample

VALIDATORS = {kind: Draft202012Validator(load_schema(kind)) for kind in EventKind}
AGREEMENT = [s for s in CORPUS if s.validator_only is None]
ONLY = [s for s in CORPUS if s.validator_only is not None]


def schema_accepts(kind: EventKind, value: bytes) -> bool:
    """The JSON Schema's verdict on a whole record value (not JSON at all: rejected)."""
    try:
        document = json.loads(value)
    except ValueError:  # includes UnicodeDecodeError
        return False
    return bool(VALIDATORS[kind].is_valid(document))


def validator_accepts(kind: EventKind, value: bytes) -> bool:
    _, invalid = decode_record(kind, value, now_ms=NOW_MS)
    return not invalid


def test_schemas_are_valid_draft_2020_12() -> None:
    for kind in EventKind:
        schema = load_schema(kind)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_corpus_size_and_coverage() -> None:
    assert len(CORPUS) >= 40
    assert len({s.name for s in CORPUS}) == len(CORPUS), "sample names must be unique"
    for kind in EventKind:
        in_kind = [s for s in AGREEMENT if s.kind is kind]
        assert any(s.reason is None for s in in_kind), kind
        assert any(s.reason is not None for s in in_kind), kind
    expressible = VALIDATOR_REASONS - {Reason.FUTURE_TIMESTAMP, Reason.TOO_LARGE}
    assert {s.reason for s in AGREEMENT} - {None} == expressible
    assert {s.validator_only for s in ONLY} == set(VALIDATOR_ONLY_RULES)


@pytest.mark.parametrize("sample", AGREEMENT, ids=lambda s: s.name)
def test_schema_and_validator_agree(sample: Sample) -> None:
    assert schema_accepts(sample.kind, sample.value) == validator_accepts(sample.kind, sample.value)


@pytest.mark.parametrize("sample", CORPUS, ids=lambda s: s.name)
def test_validator_outcome_matches_corpus(sample: Sample) -> None:
    events, invalid = decode_record(sample.kind, sample.value, now_ms=NOW_MS)
    if sample.reason is None:
        assert invalid == []
        for name, expected in sample.expect.items():
            assert len(events) == 1
            assert getattr(events[0], name) == expected, name
    else:
        assert invalid, "expected a rejection"
        first, _ = invalid[0]
        assert (first.reason, first.index) == (sample.reason, sample.index), first.detail


@pytest.mark.parametrize("sample", ONLY, ids=lambda s: s.name)
def test_validator_only_samples_are_beyond_the_schema(sample: Sample) -> None:
    """Each marked sample is one the schema accepts (it cannot express the rule)."""
    assert schema_accepts(sample.kind, sample.value)


def _python_built_events(rnd: random.Random) -> list[Event]:
    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    return [
        ApiCall.new(
            service="svc",
            endpoint="/v1/things/{id}",
            method=rnd.choice(["GET", "POST", "PATCH"]),
            success=rnd.random() < 0.9,
            response_time_ms=rnd.random() * 5000,
            user_id=rnd.choice([None, "u-1"]),
            status_code=rnd.choice([None, 200, 404]),
            tokens=rnd.randrange(10**6),
            cost_usd=rnd.random() * 1000,
            now=now,
        ),
        Analysis.new(
            model_type="m",
            status="processing",
            request_tokens=rnd.randrange(10**9),
            api_cost_usd=rnd.random() * 1000,
            processing_time_ms=rnd.random() * 1000,
            queue_wait_time_ms=rnd.random() * 1000,
            metadata={"n": rnd.random()},
            now=now,
        ),
        SystemLog.new(level="debug", service="s", message="é" * rnd.randrange(3000), now=now),
    ]


def test_to_wire_output_satisfies_the_schema() -> None:
    rnd = random.Random(7)
    for _ in range(50):
        for built in _python_built_events(rnd):
            value = orjson.dumps(built.to_wire())
            assert schema_accepts(built.kind, value), built
            assert validator_accepts(built.kind, value), built


_TIMESTAMP_SEEDS = (
    "2026-11-22T10:00:00Z",
    "2026-11-22T10:00:00.123+01:00",
    "1999-12-31T23:59:59.123456789-23:59",
    "2024-02-29T00:00:00.5Z",
    "1970-01-01T00:00:00Z",
)


def _mutate(rnd: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rnd.randint(1, 3)):
        at = rnd.randrange(len(chars) + 1)
        roll = rnd.random()
        if roll < 0.5 and at < len(chars):
            chars[at] = rnd.choice("0123456789+-:.TZtz ,\u0661a")
        elif roll < 0.75:
            chars.insert(at, rnd.choice("0123456789+-:.TZ "))
        elif at < len(chars):
            del chars[at]
    return "".join(chars)


def _calendar_impossible(text: str) -> bool:
    try:
        date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return True
    return False


def test_timestamp_pattern_and_validator_agree_on_mutations() -> None:
    """Seeded fuzzing of occurred_at strings: the schema's pattern and the validator agree
    except on calendar-impossible dates (validator-only)."""
    timestamp = Draft202012Validator(load_schema(EventKind.API_CALL)["$defs"]["timestamp"])
    rnd = random.Random(20261122)
    checked = accepted = 0
    for _ in range(4000):
        text = _mutate(rnd, rnd.choice(_TIMESTAMP_SEEDS))
        by_schema = bool(timestamp.is_valid(text))
        value = orjson.dumps(
            {
                "event_id": "0b6f3c1e-8a2d-4c5b-9e7f-1a2b3c4d5e6f",
                "occurred_at": text,
                "service": "s",
                "endpoint": "/",
                "method": "GET",
                "success": True,
                "response_time_ms": 1,
            }
        )
        # A clock beyond year 9999 so that future_timestamp never decides the outcome.
        _, invalid = decode_record(EventKind.API_CALL, value, now_ms=10**15)
        by_validator = not invalid
        if by_schema != by_validator:
            assert by_schema, text
            assert _calendar_impossible(text), text
        checked += 1
        accepted += by_validator
    assert accepted > 100, "the mutations should leave some timestamps valid"
    assert checked == 4000


def test_record_schema_accepts_arrays_and_rejects_scalars() -> None:
    schema = VALIDATORS[EventKind.SYSTEM_LOG]
    assert schema.is_valid([])
    assert not schema.is_valid("x")
    assert not schema.is_valid(None)


def test_docs_examples_are_valid_for_both() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "events.md"
    blocks = re.findall(r"```json\n(.*?)```", docs.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == len(EventKind)
    for kind, block in zip(EventKind, blocks, strict=True):
        value = block.encode()
        assert schema_accepts(kind, value), kind
        events, invalid = decode_record(kind, value, now_ms=NOW_MS)
        assert invalid == [], kind
        assert events[0].kind is kind
