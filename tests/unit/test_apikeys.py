"""The shape of API keys (pipeline.apikeys): what a key looks like and what parses."""

from __future__ import annotations

from pipeline import apikeys


def test_a_new_key_parses_to_its_id_and_hashes_to_32_bytes() -> None:
    key_id, key = apikeys.new_key()
    assert apikeys.parse_key(key) == key_id
    assert len(key_id) == 12 and key.startswith(f"evk_{key_id}_")
    assert len(apikeys.hash_key(key)) == 32
    assert apikeys.new_key()[1] != key


def test_anything_else_does_not_parse() -> None:
    _, key = apikeys.new_key()
    for presented in ("", "evk_", key + "x", key[:-1], key.upper(), f"Bearer {key}", " " + key):
        assert apikeys.parse_key(presented) is None, presented
