"""Which dead letters a replay publishes (pure planning, no broker)."""

from __future__ import annotations

from pipeline.deadletters import Filters
from pipeline.deadletters.read import DeadLetter
from pipeline.deadletters.replay import plan_replay


def letter(key: str, value: bytes | None, original_size: int | None = None) -> DeadLetter:
    return DeadLetter(
        key=key, reason="malformed_json", detail="", source_topic="calls",
        source_partition=0, source_offset=int(key.rsplit("/", 1)[1]), event_index=None,
        worker_id="w", value=value, dlq_partition=0, dlq_offset=0, original_size=original_size,
    )  # fmt: skip


def test_truncated_letters_are_never_replayed() -> None:
    letters = [letter("calls/0/1", b"{}"), letter("calls/0/2", b"\xfe" * 10, original_size=10**7)]
    plan = plan_replay("dlq", letters, set(), filters=Filters(), allowed_topics={"calls"})
    assert [item.key for item in plan.to_replay] == ["calls/0/1"]
    ((refused, why),) = plan.not_replayable
    assert refused.key == "calls/0/2" and "truncated" in why
