"""The master key, its id, and the keyed streams: deterministic, and different for anything they name."""

import base64

import numpy as np
import pytest

from tracing.keys import CopyKeys, TraceKey, TraceKeyError

SECRET = bytes(range(32))


def test_a_key_has_a_stable_id_that_says_nothing_of_the_key():
    key = TraceKey(SECRET)
    assert key.key_id == TraceKey(SECRET).key_id
    assert len(key.key_id) == 16 and key.key_id not in SECRET.hex()
    assert TraceKey(bytes(32)).key_id != key.key_id
    assert SECRET.hex() not in repr(key)


def test_a_key_is_read_from_hex_or_base64():
    assert TraceKey.from_text(SECRET.hex()).key_id == TraceKey(SECRET).key_id
    assert TraceKey.from_text(base64.b64encode(SECRET).decode()).key_id == TraceKey(SECRET).key_id
    assert TraceKey.from_text(base64.urlsafe_b64encode(SECRET).decode().rstrip("=")).key_id == TraceKey(SECRET).key_id


@pytest.mark.parametrize("text", ["", "00" * 16, "not a key at all!"])
def test_a_short_or_unreadable_key_is_refused_with_what_to_do(text):
    with pytest.raises(TraceKeyError, match="token_hex"):
        TraceKey.from_text(text)


def test_streams_are_deterministic():
    keys = CopyKeys(TraceKey(SECRET), "org/name", "rev")
    assert np.array_equal(keys.pattern("a.safetensors", "t", 1000), keys.pattern("a.safetensors", "t", 1000))
    assert keys.code_bytes("a.safetensors", "t", "alice", 100) == keys.code_bytes("a.safetensors", "t", "alice", 100)
    assert set(np.unique(keys.pattern("a.safetensors", "t", 1000))) == {-1, 1}


def test_every_name_in_a_stream_changes_it():
    keys = CopyKeys(TraceKey(SECRET), "org/name", "rev")
    base = keys.code_bytes("a.safetensors", "t", "alice", 4096)
    others = [
        CopyKeys(TraceKey(bytes(32)), "org/name", "rev").code_bytes("a.safetensors", "t", "alice", 4096),
        CopyKeys(keys.key, "org/other", "rev").code_bytes("a.safetensors", "t", "alice", 4096),
        CopyKeys(keys.key, "org/name", "rev2").code_bytes("a.safetensors", "t", "alice", 4096),
        keys.code_bytes("b.safetensors", "t", "alice", 4096),
        keys.code_bytes("a.safetensors", "u", "alice", 4096),
        keys.code_bytes("a.safetensors", "t", "bob", 4096),
    ]
    assert all(other != base for other in others)
    # Recipients and the shared pattern are separate streams even when the names could run together.
    assert keys.code_bytes("a", "tb", "c", 64) != keys.code_bytes("a", "t", "bc", 64)


def test_an_empty_recipient_id_is_refused():
    with pytest.raises(ValueError, match="recipient"):
        CopyKeys(TraceKey(SECRET), "org/name", "rev").code("a.safetensors", "t", "", 10)
