"""Xorbs and shards written from the public Xet specification, for tests and benches to send or store what
hf_xet would (and what it never would)."""

import struct

import lz4.frame

from distribution import xet_formats


def xorb_chunk(plain: bytes, compression: int) -> bytes:
    """One chunk as a xorb stores it: its header (version 0, stored size, compression, size), then its bytes
    as they are, LZ4-compressed, or LZ4-compressed after byte grouping (as hf_xet sends bf16 weights)."""
    if compression == xet_formats.COMPRESSION_NONE:
        packed = plain
    else:
        grouped = b"".join(plain[group::4] for group in range(4))
        packed = lz4.frame.compress(grouped if compression == xet_formats.COMPRESSION_BG4_LZ4 else plain)
    header = bytes([0]) + len(packed).to_bytes(3, "little") + bytes([compression]) + len(plain).to_bytes(3, "little")
    return header + packed


def xorb_of(chunks: list[bytes], compression: int = xet_formats.COMPRESSION_NONE) -> tuple[str, bytes]:
    """(its hash, its bytes) of a xorb of these chunks, each stored as `compression` says."""
    data = b"".join(xorb_chunk(chunk, compression) for chunk in chunks)
    return xet_formats.records_hash(xet_formats.xorb_records(data)), data


def shard_of_terms(terms: list[tuple[str, int, int, int]], sha256: str, file_hash: str = "ab" * 32) -> bytes:
    """A shard of one file of `sha256` made of `terms`, each (xorb hash, first chunk, end chunk, size)."""
    raw_hash = xet_formats.hash_raw
    header = xet_formats.SHARD_HEADER_TAG + struct.pack("<QQ", xet_formats.SHARD_VERSION, 0)
    file_header = raw_hash(file_hash) + struct.pack("<II", xet_formats.FLAG_METADATA, len(terms)) + bytes(8)
    entries = b"".join(raw_hash(xorb) + struct.pack("<IIII", 0, size, start, end) for xorb, start, end, size in terms)
    metadata = raw_hash(sha256) + bytes(16)
    return header + file_header + entries + metadata + xet_formats.BOOKEND + bytes(16)
