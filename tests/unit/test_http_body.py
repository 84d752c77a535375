"""Request bodies of ``pipeline http`` (pipeline.http.body): events split out of a JSON
array or NDJSON, and Content-Encoding undone within the body limit."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import orjson
import pytest

from pipeline.http.body import BadLine, BodyError, decompress, split_events

# --- split_events ---------------------------------------------------------------------------


def test_a_json_array_gives_its_elements_in_order() -> None:
    body = b' \n\t[{"a": 1}, {"b": 2}, 3, "x", null, [1]]\r\n'
    assert split_events(body, max_events=10) == [{"a": 1}, {"b": 2}, 3, "x", None, [1]]


def test_an_empty_json_array_has_no_events() -> None:
    assert split_events(b"[]", max_events=1) == []
    assert split_events(b"  [ ]  ", max_events=1) == []


@pytest.mark.parametrize("body", [b"", b" ", b"\n", b"\r\n\r\n", b" \t\r\n \n"])
def test_an_empty_or_blank_body_has_no_events(body: bytes) -> None:
    assert split_events(body, max_events=1) == []


def test_ndjson_gives_one_event_per_line_skipping_blank_lines() -> None:
    body = b'{"a": 1}\n\n   \n{"b": 2}\n\t\n{"c": 3}\n\n'
    assert split_events(body, max_events=10) == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_ndjson_with_crlf_line_ends() -> None:
    body = b'{"a": 1}\r\n\r\n{"b": 2}\r\n{"c": "x\\r"}\r\n'
    assert split_events(body, max_events=10) == [{"a": 1}, {"b": 2}, {"c": "x\r"}]


def test_ndjson_without_a_final_newline() -> None:
    assert split_events(b'{"a": 1}\n{"b": 2}', max_events=10) == [{"a": 1}, {"b": 2}]


def test_ndjson_scalars_are_events_too() -> None:
    # Deciding that they are not objects is admit's job, not the body's.
    assert split_events(b'1\n"x"\nnull\n', max_events=10) == [1, "x", None]


def test_a_bad_ndjson_line_is_an_event_of_its_own_at_its_position() -> None:
    body = b'{"a": 1}\n\n{"b": \n{"c": 3}\n'
    events = split_events(body, max_events=10)
    assert len(events) == 3
    assert events[0] == {"a": 1}
    assert events[2] == {"c": 3}
    bad = events[1]
    assert isinstance(bad, BadLine)
    # The line number counts blank lines (it is a line of the body, not an event index).
    assert bad.detail.startswith("line 3: not valid JSON")


def test_a_pretty_printed_object_is_not_ndjson() -> None:
    events = split_events(b'{\n  "a": 1\n}\n', max_events=10)
    assert len(events) == 3
    assert all(isinstance(e, BadLine) for e in events)


def test_a_bad_json_array_fails_the_whole_body_with_400() -> None:
    with pytest.raises(BodyError) as caught:
        split_events(b'[{"a": 1}, {"b": ]', max_events=10)
    assert caught.value.status == 400
    assert caught.value.code == "malformed_json"
    assert caught.value.detail.startswith("the body is not valid JSON")


def test_an_array_followed_by_more_json_fails_with_400() -> None:
    with pytest.raises(BodyError) as caught:
        split_events(b'[{"a": 1}]\n[{"b": 2}]\n', max_events=10)
    assert caught.value.status == 400
    assert caught.value.code == "malformed_json"


@pytest.mark.parametrize("count", [1, 5])
def test_exactly_max_events_pass_in_both_forms(count: int) -> None:
    events = [{"n": i} for i in range(count)]
    array = orjson.dumps(events)
    ndjson = b"\n".join(orjson.dumps(e) for e in events) + b"\n\n"
    assert split_events(array, max_events=count) == events
    assert split_events(ndjson, max_events=count) == events


def test_too_many_events_in_an_array_is_413() -> None:
    body = orjson.dumps([{"n": i} for i in range(6)])
    with pytest.raises(BodyError) as caught:
        split_events(body, max_events=5)
    assert caught.value.status == 413
    assert caught.value.code == "too_many_events"
    assert "5" in caught.value.detail


def test_too_many_events_in_ndjson_is_413() -> None:
    body = b"\n".join(orjson.dumps({"n": i}) for i in range(6))
    with pytest.raises(BodyError) as caught:
        split_events(body, max_events=5)
    assert caught.value.status == 413
    assert caught.value.code == "too_many_events"


def test_bad_ndjson_lines_count_as_events() -> None:
    body = b'{"a": 1}\nnope\n{"b": 2}\n'
    with pytest.raises(BodyError) as caught:
        split_events(body, max_events=2)
    assert caught.value.status == 413


def test_blank_ndjson_lines_do_not_count_as_events() -> None:
    body = b'{"a": 1}\n\n\n\r\n{"b": 2}\n\n\n'
    assert len(split_events(body, max_events=2)) == 2


# --- decompress -----------------------------------------------------------------------------

PLAIN = b'{"type": "api_call"}\n' * 200


@pytest.mark.parametrize("encoding", ["", "identity"])
def test_identity_is_returned_as_is(encoding: str) -> None:
    assert decompress(PLAIN, encoding, len(PLAIN)) is PLAIN


@pytest.mark.parametrize("encoding", ["", "identity"])
def test_identity_past_the_limit_is_413(encoding: str) -> None:
    with pytest.raises(BodyError) as caught:
        decompress(PLAIN, encoding, len(PLAIN) - 1)
    assert caught.value.status == 413
    assert caught.value.code == "body_too_large"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip"])
def test_gzip(encoding: str) -> None:
    assert decompress(gzip.compress(PLAIN), encoding, 10_000) == PLAIN


def test_deflate_is_zlib() -> None:
    assert decompress(zlib.compress(PLAIN), "deflate", 10_000) == PLAIN


def test_deflate_also_takes_gzip_data() -> None:
    # Window bits 47 detect either header, as the module says.
    assert decompress(gzip.compress(PLAIN), "deflate", 10_000) == PLAIN


def test_an_empty_gzip_body_decodes_to_nothing() -> None:
    assert decompress(gzip.compress(b""), "gzip", 1024) == b""


def test_output_exactly_at_the_limit_passes() -> None:
    assert decompress(gzip.compress(PLAIN), "gzip", len(PLAIN)) == PLAIN
    assert decompress(zlib.compress(PLAIN), "deflate", len(PLAIN)) == PLAIN


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_output_past_the_limit_is_413(encoding: str) -> None:
    body = gzip.compress(PLAIN) if encoding == "gzip" else zlib.compress(PLAIN)
    with pytest.raises(BodyError) as caught:
        decompress(body, encoding, len(PLAIN) - 1)
    assert caught.value.status == 413
    assert caught.value.code == "body_too_large"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "GZIP?", "*"])
def test_another_encoding_is_415(encoding: str) -> None:
    with pytest.raises(BodyError) as caught:
        decompress(gzip.compress(PLAIN), encoding, 10_000)
    assert caught.value.status == 415
    assert caught.value.code == "unsupported_encoding"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_data_that_is_not_compressed_is_400(encoding: str) -> None:
    with pytest.raises(BodyError) as caught:
        decompress(PLAIN, encoding, 10_000)
    assert caught.value.status == 400
    assert caught.value.code == "malformed_body"


def test_corrupt_gzip_is_400() -> None:
    data = bytearray(gzip.compress(PLAIN))
    data[20:40] = bytes(b ^ 0xFF for b in data[20:40])
    with pytest.raises(BodyError) as caught:
        decompress(bytes(data), "gzip", 10_000)
    assert caught.value.status == 400
    assert caught.value.code == "malformed_body"


def test_zlib_data_sent_as_gzip_is_400() -> None:
    with pytest.raises(BodyError) as caught:
        decompress(zlib.compress(PLAIN), "gzip", 10_000)
    assert caught.value.status == 400


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_truncated_data_is_400(encoding: str) -> None:
    body = gzip.compress(PLAIN) if encoding == "gzip" else zlib.compress(PLAIN)
    for cut in (len(body) // 2, len(body) - 4, len(body) - 1):
        with pytest.raises(BodyError) as caught:
            decompress(body[:cut], encoding, 10_000)
        assert caught.value.status == 400, cut
        assert caught.value.code == "malformed_body"
        assert "truncated" in caught.value.detail


def test_an_empty_body_said_to_be_gzip_is_400() -> None:
    with pytest.raises(BodyError) as caught:
        decompress(b"", "gzip", 10_000)
    assert caught.value.status == 400


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_stops_at_the_limit_fast_and_small(encoding: str) -> None:
    zeros = b"\0" * (50 * 1024 * 1024)
    bomb = gzip.compress(zeros, 9) if encoding == "gzip" else zlib.compress(zeros, 9)
    del zeros
    assert len(bomb) < 200_000
    limit = 1_048_576
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(BodyError) as caught:
            decompress(bomb, encoding, limit)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert caught.value.code == "body_too_large"
    assert elapsed < 0.5
    assert peak < 8 * limit  # nowhere near the 50 MB the bomb expands to


def test_a_multi_member_gzip_body_is_not_silently_cut() -> None:
    first = b'{"n": 1}\n'
    second = b'{"n": 2}\n'
    body = gzip.compress(first) + gzip.compress(second)
    refused: int | None = None
    decoded = b""
    try:
        decoded = decompress(body, "gzip", 10_000)
    except BodyError as exc:
        refused = exc.status
    assert refused == 400 or decoded == first + second  # refusing the body would do too


def test_a_byte_order_mark_is_skipped() -> None:
    assert split_events(b"\xef\xbb\xbf[{}]", max_events=5) == [{}]
    assert split_events(b'\xef\xbb\xbf{"a": 1}\n{"b": 2}', max_events=5) == [{"a": 1}, {"b": 2}]


def test_zero_padding_after_the_last_gzip_member_is_accepted() -> None:
    body = gzip.compress(b"[{}]") + b"\0" * 512  # what some tape-era tools append
    assert decompress(body, "gzip", 1024) == b"[{}]"
    with pytest.raises(BodyError) as raised:
        decompress(gzip.compress(b"[{}]") + b"junk", "gzip", 1024)
    assert raised.value.status == 400
