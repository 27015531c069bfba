"""The two Xet objects a Hub client uploads, read and bounded: xorbs (chunks, each compressed) and shards
(per file, the chunk ranges of xorbs it is made of, and its sha256); the hashes that name chunks and xorbs;
and the shard a dedup query is answered with. Plain Python over bytes, after the public Xet specification
(hashing, xorb and MDB shard formats); nothing here trusts a length it has not checked.

A hash is 32 bytes; as text (in paths, and here) each of its four 8-byte words is written as a little-endian
number, as the specification says, so the sha256 a shard carries reads as the usual hex only that way too.
"""

import re
import struct
from dataclasses import dataclass

import blake3
import lz4.frame

HASH_TEXT = re.compile(r"^[0-9a-f]{64}$")
CHUNK_HEADER = 8
CHUNK_MAX_BYTES = 128 * 1024  # a chunk is at most 128 KiB, stored uncompressed when compression gains nothing
XORB_MAX_BYTES = 64 * 1024 * 1024  # the serialized limit the specification sets (the client cuts xorbs below it)
COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_BG4_LZ4 = 0, 1, 2
SHARD_HEADER_TAG = bytes.fromhex(
    "48465265706f4d6574614461746100556967456a7b815783a5bdd95ccdd14aa9"
)  # "HFRepoMetaData", 0, then fixed bytes
SHARD_VERSION = 2
ENTRY = 48  # every record of a shard's file info section is 48 bytes
BOOKEND = b"\xff" * 32
FLAG_VERIFICATION, FLAG_METADATA = 1 << 31, 1 << 30
SHARD_FOOTER_VERSION = 1
SHARD_FOOTER = 200  # 9 offsets and counts, an HMAC key, two times, 6 spare words, 3 sizes and its own offset
# The keys of the keyed blake3 the specification hashes chunks (DATA_KEY) and merkle nodes with.
DATA_KEY = bytes.fromhex("6697f5775b9550de3135cbaca597181c9de421109beb2b58b4d0b04b93adf229")
NODE_KEY = bytes.fromhex("017ec5c7a5472996fd946666b48a02e65ddd536f37c76dd2f86352e64a53713f")
NODE_MEAN_BRANCHING = 4  # a merkle node closes after a child whose last hash word is a multiple of this
NODE_MAX_CHILDREN = 2 * NODE_MEAN_BRANCHING + 1
DEDUP_MODULUS = 1024  # a chunk whose last hash word is a multiple of this is global-dedup eligible


class Malformed(ValueError):
    """Bytes that are not the object they were sent as; the message says where they go wrong."""


def hash_text(raw: bytes) -> str:
    return b"".join(raw[at : at + 8][::-1] for at in range(0, 32, 8)).hex()


def hash_raw(text: str) -> bytes:
    return bytes.fromhex(hash_text(bytes.fromhex(text)))  # the word order is its own inverse


def last_word(raw: bytes) -> int:
    return int.from_bytes(raw[24:32], "little")


def lookup_key(raw: bytes) -> int:
    """A hash truncated to its first word, as a shard's lookup tables sort and search it."""
    return int.from_bytes(raw[:8], "little")


def chunk_hash(plain: bytes) -> bytes:
    return blake3.blake3(plain, key=DATA_KEY).digest()


def dedup_eligible(raw: bytes) -> bool:
    return last_word(raw) % DEDUP_MODULUS == 0


def xorb_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    """The merkle root over (chunk hash, size) pairs: each level groups 2 to 9 nodes, closing a group after
    a node whose last word is a multiple of 4, until one node is left."""
    level = list(chunks)
    while len(level) > 1:
        merged, at = [], 0
        while at < len(level):
            end = at + node_width(level, at)
            merged.append(node(level[at:end]))
            at = end
        level = merged
    return level[0][0]


def node_width(level: list[tuple[bytes, int]], at: int) -> int:
    remaining = len(level) - at
    if remaining <= 2:
        return remaining
    for width in range(3, min(NODE_MAX_CHILDREN, remaining) + 1):
        if last_word(level[at + width - 1][0]) % NODE_MEAN_BRANCHING == 0:
            return width
    return min(NODE_MAX_CHILDREN, remaining)


def node(children: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{hash_text(raw)} : {size}\n" for raw, size in children)
    return blake3.blake3(text.encode(), key=NODE_KEY).digest(), sum(size for _, size in children)


@dataclass(frozen=True)
class Chunk:
    offset: int  # of its data, after the header
    stored: int  # bytes as stored (compressed)
    compression: int
    size: int  # bytes once decompressed


def xorb_chunks(data: bytes) -> list[Chunk]:
    """The chunks of a serialized xorb, every header checked; the metadata footer the specification allows
    after them (its length in the last 4 bytes) is skipped, never read."""
    if not data:
        raise Malformed("the xorb is empty")
    if len(data) > XORB_MAX_BYTES:
        raise Malformed(f"the xorb has {len(data)} bytes, over the {XORB_MAX_BYTES} a xorb may have")
    footer_at = len(data) - 4 - int.from_bytes(data[-4:], "little") if len(data) >= 4 else -1
    chunks, at = [], 0
    while at < len(data):
        if at == footer_at and data[at] != 0:
            break  # the footer: a chunk header starts with version 0, the footer with its own tag
        chunk = chunk_at(data, at, len(chunks))
        chunks.append(chunk)
        at = chunk.offset + chunk.stored
    return chunks


@dataclass(frozen=True)
class ChunkRecord:
    """What a dedup answer says of one chunk of a stored xorb: its hash, where it lies in the xorb's bytes
    (header included) and its size once decompressed."""

    hash: bytes
    start: int
    end: int
    size: int


RECORD = struct.Struct("<32sIII")


def xorb_records(data: bytes) -> list[ChunkRecord]:
    """Every chunk of a serialized xorb, decompressed (else Malformed) and hashed."""
    return [
        ChunkRecord(
            chunk_hash(chunk_bytes(data, chunk)), chunk.offset - CHUNK_HEADER, chunk.offset + chunk.stored, chunk.size
        )
        for chunk in xorb_chunks(data)
    ]


def records_hash(records: list[ChunkRecord]) -> str:
    return hash_text(xorb_hash([(record.hash, record.size) for record in records]))


def packed_records(records: list[ChunkRecord]) -> bytes:
    return b"".join(RECORD.pack(record.hash, record.start, record.end, record.size) for record in records)


def unpacked_records(packed: bytes) -> list[ChunkRecord]:
    return [ChunkRecord(*fields) for fields in RECORD.iter_unpack(packed)]


def chunk_at(data: bytes, at: int, index: int) -> Chunk:
    if at + CHUNK_HEADER > len(data):
        raise Malformed(f"chunk {index} of the xorb is cut off in its header")
    version, compression = data[at], data[at + 4]
    stored, size = int.from_bytes(data[at + 1 : at + 4], "little"), int.from_bytes(data[at + 5 : at + 8], "little")
    if version != 0:
        raise Malformed(f"chunk {index} of the xorb has header version {version}, not 0")
    if compression not in (COMPRESSION_NONE, COMPRESSION_LZ4, COMPRESSION_BG4_LZ4):
        raise Malformed(f"chunk {index} of the xorb names compression {compression}: only 0, 1 and 2 exist")
    if not 0 < size <= CHUNK_MAX_BYTES or (compression == COMPRESSION_NONE and stored != size):
        raise Malformed(f"chunk {index} of the xorb claims {size} bytes ({stored} stored): a chunk has 1 to 128 KiB")
    if at + CHUNK_HEADER + stored > len(data):
        raise Malformed(f"chunk {index} of the xorb is cut off: {stored} bytes announced")
    return Chunk(at + CHUNK_HEADER, stored, compression, size)


def chunk_bytes(data: bytes, chunk: Chunk) -> bytes | bytearray:
    """A chunk's bytes, decompressed and of exactly the size its header gives (else Malformed)."""
    stored = data[chunk.offset : chunk.offset + chunk.stored]
    if chunk.compression == COMPRESSION_NONE:
        return stored
    try:
        # At most one byte more than announced: enough to tell a chunk that lies about its size.
        plain = lz4.frame.LZ4FrameDecompressor().decompress(stored, max_length=chunk.size + 1)
    except RuntimeError as error:
        raise Malformed(f"a chunk's LZ4 data does not decompress ({error})") from None
    if len(plain) != chunk.size:
        raise Malformed(f"a chunk decompresses to {len(plain)} bytes, not the {chunk.size} its header gives")
    return ungrouped(plain) if chunk.compression == COMPRESSION_BG4_LZ4 else plain


def ungrouped(grouped: bytes) -> bytearray:
    """Undo byte grouping: group g holds the bytes at positions g, g + 4, ... (the first groups one longer).
    The bytearray itself is returned: a copy into bytes would cost a third of the time again."""
    size, plain, start = len(grouped), bytearray(len(grouped)), 0
    for group in range(4):
        length = size // 4 + (1 if group < size % 4 else 0)
        plain[group::4] = grouped[start : start + length]
        start += length
    return plain


@dataclass(frozen=True)
class Term:
    xorb: str  # its hash as text
    start: int  # chunk range [start, end) of the xorb
    end: int
    size: int  # the bytes the range holds once decompressed


def packed_terms(terms: tuple[Term, ...]) -> bytes:
    """A file's terms as 44-byte records (the xorb's raw hash, then start, end and size), as a chunk record."""
    return b"".join(RECORD.pack(hash_raw(term.xorb), term.start, term.end, term.size) for term in terms)


def unpacked_terms(packed: bytes) -> tuple[Term, ...]:
    return tuple(Term(hash_text(raw), start, end, size) for raw, start, end, size in RECORD.iter_unpack(packed))


def term_problem(term: Term, records: list[ChunkRecord]) -> str | None:
    """Why `term` cannot be made from the xorb whose chunks are `records`; None when it can."""
    if term.end > len(records):
        return f"a term names chunks [{term.start}, {term.end}) of xorb {term.xorb}, which has {len(records)}"
    held = sum(record.size for record in records[term.start : term.end])
    if held != term.size:
        return f"chunks [{term.start}, {term.end}) of xorb {term.xorb} hold {held} bytes, not {term.size}"
    return None


@dataclass(frozen=True)
class ShardFile:
    file_hash: str
    sha256: str
    terms: tuple[Term, ...]

    @property
    def size(self) -> int:
        return sum(term.size for term in self.terms)


def shard_files(data: bytes) -> list[ShardFile]:
    """The files a shard records (its file info section, up to the bookend); each must give its sha256
    (the metadata extension), which is what the portal checks the rebuilt bytes against."""
    if len(data) < ENTRY or data[:32] != SHARD_HEADER_TAG:
        raise Malformed("this is not an MDB shard: its header tag is missing")
    version = struct.unpack_from("<Q", data, 32)[0]
    if version != SHARD_VERSION:
        raise Malformed(f"the shard has header version {version}; this portal reads version {SHARD_VERSION}")
    files, at = [], ENTRY
    while True:
        record = entry_at(data, at)
        if record[:32] == BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", record, 32)
        at += ENTRY
        terms = tuple(term_at(entry_at(data, at + ENTRY * index), len(files)) for index in range(count))
        at += ENTRY * count * (2 if flags & FLAG_VERIFICATION else 1)
        name = hash_text(record[:32])
        if not flags & FLAG_METADATA:
            raise Malformed(f"file {name} of the shard gives no sha256 (no metadata extension): upgrade hf_xet")
        sha256 = hash_text(entry_at(data, at)[:32])
        at += ENTRY
        if not terms:
            raise Malformed(f"file {name} of the shard has no terms")
        files.append(ShardFile(name, sha256, terms))


def entry_at(data: bytes, at: int) -> bytes:
    if at + ENTRY > len(data):
        raise Malformed("the shard ends inside its file info section (no bookend)")
    return data[at : at + ENTRY]


def term_at(record: bytes, file_index: int) -> Term:
    _flags, size, start, end = struct.unpack_from("<IIII", record, 32)
    if not start < end or size == 0:
        raise Malformed(f"file {file_index} of the shard has an empty chunk range [{start}, {end})")
    return Term(hash_text(record[:32]), start, end, size)


@dataclass(frozen=True)
class StoredXorb:
    hash: str
    size: int  # serialized
    records: list[ChunkRecord]


def dedup_shard(xorbs: list[StoredXorb], expires: int, created: int) -> bytes:
    """A shard with no files and a CAS info block (every chunk, with lookup tables) per xorb: what a dedup
    query is answered with, so the client references these chunks instead of sending them again. The client
    stops trusting it after `expires` (a Unix time)."""
    ordered = sorted(xorbs, key=lambda xorb: lookup_key(hash_raw(xorb.hash)))
    empty_section = BOOKEND + bytes(16)
    xorb_info_at = ENTRY + len(empty_section)
    blocks, xorb_lookup, chunk_lookup, index = [], [], [], 0
    for xorb in ordered:
        raw, plain = hash_raw(xorb.hash), sum(record.size for record in xorb.records)
        blocks.append(raw + struct.pack("<IIII", 0, len(xorb.records), plain, xorb.size))
        xorb_lookup.append(struct.pack("<QI", lookup_key(raw), index))
        position = 0
        for offset, record in enumerate(xorb.records):
            blocks.append(record.hash + struct.pack("<IIII", position, record.size, 0, 0))
            chunk_lookup.append((lookup_key(record.hash), index, offset))
            position += record.size
        index += 1 + len(xorb.records)
    blocks.append(empty_section)
    xorb_section = b"".join(blocks)
    xorb_lookup_at = xorb_info_at + len(xorb_section)
    chunk_lookup_at = xorb_lookup_at + 12 * len(xorb_lookup)
    footer_at = chunk_lookup_at + 16 * len(chunk_lookup)
    footer = struct.pack(
        "<9Q32sQQ6Q4Q",
        SHARD_FOOTER_VERSION,
        ENTRY,  # the file info section: only its bookend
        xorb_info_at,
        xorb_info_at + len(xorb_section),  # no file lookup entries
        0,
        xorb_lookup_at,
        len(xorb_lookup),
        chunk_lookup_at,
        len(chunk_lookup),
        bytes(32),  # no HMAC key: the chunk hashes are given as they are
        created,
        expires,
        *([0] * 6),
        sum(xorb.size for xorb in ordered),
        0,
        sum(record.size for xorb in ordered for record in xorb.records),
        footer_at,
    )
    return b"".join(
        [
            SHARD_HEADER_TAG + struct.pack("<QQ", SHARD_VERSION, SHARD_FOOTER),
            empty_section,
            xorb_section,
            *xorb_lookup,
            *(struct.pack("<QII", *entry) for entry in sorted(chunk_lookup)),
            footer,
        ]
    )
