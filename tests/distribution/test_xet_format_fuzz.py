"""Mutated xorbs and shards, as a client could send them: the readers either take them or refuse them with
Malformed (which the CAS endpoints answer as a 400 naming the problem), never another exception (a 500)."""

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distribution import xet_formats
from tests.support.xet import shard_of_terms, xorb_chunk

COMPRESSIONS = st.sampled_from(
    [xet_formats.COMPRESSION_NONE, xet_formats.COMPRESSION_LZ4, xet_formats.COMPRESSION_BG4_LZ4]
)
CHUNKS = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """`original` with some bytes replaced, some cut from the end, or some put in."""
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["replace", "truncate", "insert"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if kind == "replace" and data:
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def xorbs(draw) -> bytes:
    chunks = draw(CHUNKS)
    return b"".join(xorb_chunk(chunk, draw(COMPRESSIONS)) for chunk in chunks)


@st.composite
def shards(draw) -> bytes:
    count = draw(st.integers(min_value=1, max_value=3))
    terms = [
        (
            hashlib.sha256(bytes([index])).hexdigest(),
            start,
            start + draw(st.integers(1, 4)),
            draw(st.integers(1, 2**20)),
        )
        for index, start in enumerate(draw(st.lists(st.integers(0, 10), min_size=count, max_size=count)))
    ]
    return shard_of_terms(terms, hashlib.sha256(b"file").hexdigest())


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_a_mutated_xorb_is_read_or_refused_as_malformed(data):
    original = data.draw(xorbs())
    assert len(xet_formats.xorb_records(original)) >= 1  # the unmutated xorb reads
    changed = data.draw(mutated(original))
    try:
        records = xet_formats.xorb_records(changed)
    except xet_formats.Malformed as error:
        assert str(error)  # says what is wrong
        return
    # Taken: every record lies inside the xorb, in order, and names a chunk of the size it decompresses to.
    assert all(0 <= record.start < record.end <= len(changed) for record in records)
    assert [record.start for record in records] == sorted(record.start for record in records)


@FUZZ
@given(st.data())
def test_a_mutated_shard_is_read_or_refused_as_malformed(data):
    original = data.draw(shards())
    assert xet_formats.shard_files(original)  # the unmutated shard reads
    changed = data.draw(mutated(original))
    try:
        files = xet_formats.shard_files(changed)
    except xet_formats.Malformed as error:
        assert str(error)
        return
    for file in files:
        assert file.terms and all(term.start < term.end and term.size > 0 for term in file.terms)
        assert len(file.sha256) == 64
