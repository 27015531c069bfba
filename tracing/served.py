"""Served files of a traceable revision: each verified shard rewritten once with its carrier tensors
last, so that every recipient's copy is the same bytes up to the carriers (the prefix: header and
every other tensor) and only the tail differs.

The portal writes the base file once (`write_served_base`: the verified values, carriers last, a valid
safetensors file it stores and verifies like a published one). A recipient's copy is the base file's
prefix followed by that recipient's tail (`ServedFile.tail_for`). Its sha256 is the prefix's hash state,
copied, fed the tail; a range of it is a range of the base file's prefix and a slice of the tail. A
shard without carriers needs no served file: the verified one is every recipient's copy.

This module is what the web tier imports to serve bytes: numpy, hashlib and the keys, nothing more.
"""

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from machine.cpus import usable_cpus
from tracing import sha256_state
from tracing.floats import MARKABLE
from tracing.keys import CopyKeys
from tracing.marking import TensorMark
from tracing.safetensors_file import Header, encode_header, read_header
from tracing.sha256_state import ResumableSha256

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TailTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # in the served file
    nbytes: int


@dataclass(frozen=True)
class ServedLayout:
    """Where a served file's shared bytes end and its per-recipient tail begins."""

    file: str  # the file's path in the repo: the keys name it
    size: int
    prefix_size: int
    carriers: tuple[TailTensor, ...]

    @property
    def tail_size(self) -> int:
        return self.size - self.prefix_size


def check_carrier(path: Path, name: str, dtype: str) -> None:
    if dtype not in MARKABLE:
        raise ValueError(f"{path}: carrier {name!r} is {dtype}; a mark goes on {', '.join(MARKABLE)} only")


def write_served_base(
    source: Path, destination: Path, file: str, carriers: Collection[str], *, prefix_digest=None
) -> ServedLayout:
    """Rewrite the verified shard `source` into `destination` with the carriers it holds placed last, every
    value unchanged; the metadata and the order of the other tensors are kept. `prefix_digest`, when given,
    is fed the prefix (every byte before the carriers) as it is written."""
    source, destination = Path(source), Path(destination)
    header = read_header(source)
    ordered = [e for e in header.entries.values() if e.name not in carriers]
    tail = [e for e in header.entries.values() if e.name in carriers]
    for entry in tail:
        check_carrier(source, entry.name, entry.dtype)
    head, _ = encode_header([(e.name, e.dtype, e.shape) for e in ordered + tail], header.metadata)
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        writer.write(head)
        if prefix_digest is not None:
            prefix_digest.update(head)
        for entry in ordered:
            copy_range(reader, writer, header.data_start + entry.start, entry.nbytes, prefix_digest)
        for entry in tail:
            copy_range(reader, writer, header.data_start + entry.start, entry.nbytes)
    return served_layout(destination, file, carriers)


def copy_range(reader, writer, offset: int, count: int, digest=None) -> None:
    buffer = memoryview(bytearray(min(count, 8 * CHUNK) or 1))
    reader.seek(offset)
    while count:
        got = reader.readinto(buffer[: min(count, len(buffer))])
        if not got:
            raise ValueError(f"{reader.name} ended early")
        writer.write(buffer[:got])
        if digest is not None:
            digest.update(buffer[:got])
        count -= got


def served_layout(path: Path, file: str, carriers: Collection[str]) -> ServedLayout:
    """The layout of a served base file; ValueError unless its carriers are exactly its last tensors."""
    return layout_of(read_header(Path(path)), file, carriers, path)


def layout_of(header: Header, file: str, carriers: Collection[str], path) -> ServedLayout:
    """The layout a served base's `header` gives (`path` names the base in errors)."""
    entries = list(header.entries.values())
    count = sum(1 for entry in entries if entry.name in carriers)
    if any(entry.name in carriers for entry in entries[: len(entries) - count]):
        raise ValueError(f"{path}: its carrier tensors are not its last ones; write it with write_served_base")
    tail = entries[len(entries) - count :]
    for entry in tail:
        check_carrier(path, entry.name, entry.dtype)
    prefix = header.data_start + tail[0].start if tail else header.size
    slots = tuple(TailTensor(e.name, e.dtype, e.shape, header.data_start + e.start, e.nbytes) for e in tail)
    return ServedLayout(file=file, size=header.size, prefix_size=prefix, carriers=slots)


class ServedFile:
    """One served base file, ready to issue copies of: its layout, its carriers' marks (read once) and the
    hash state of its prefix (resumed from the one recorded when the base was written, or else computed on
    first use by reading the prefix). Keep one per process and file."""

    def __init__(
        self,
        path: Path,
        layout: ServedLayout,
        keys: CopyKeys,
        base_tail: bytes | None = None,
        *,
        recorded: dict | None = None,
    ):
        """`base_tail`: the base's bytes after its prefix (its carriers as verified), when already in memory;
        read from `path` otherwise. `recorded`: what preparing the base recorded of it ("sha256", and
        "prefix_state" where it was taken); ValueError when the recorded prefix state and this tail do not
        give the recorded sha256."""
        self.path, self.layout, self.keys = Path(path), layout, keys
        if base_tail is None:
            base_tail = b"".join(read_file_range(self.path, layout.prefix_size, layout.size))
        if len(base_tail) != layout.tail_size:
            raise ValueError(f"{path}: a tail of {len(base_tail)} bytes, not {layout.tail_size}")
        self._prefix_state = resumed_prefix_state(recorded or {}, layout, base_tail, path)
        self.marks = []
        for slot in layout.carriers:
            uint = MARKABLE[slot.dtype].uint
            start = slot.offset - layout.prefix_size
            bits = np.frombuffer(base_tail, dtype=uint, count=slot.nbytes // np.dtype(uint).itemsize, offset=start)
            self.marks.append((slot, TensorMark(bits, slot.dtype, keys.pattern(layout.file, slot.name, bits.size))))

    @classmethod
    def open(cls, path: Path, file: str, carriers: Collection[str], keys: CopyKeys) -> "ServedFile":
        return cls(path, served_layout(path, file, carriers), keys)

    def tail_for(self, recipient: str) -> bytearray:
        """The bytes that follow the shared prefix in `recipient`'s copy: the carriers, marked (made in
        place in one buffer, which the caller owns)."""
        tail = bytearray(self.layout.tail_size)
        for slot, mark in self.marks:
            start = slot.offset - self.layout.prefix_size
            width = np.dtype(mark.format.uint).itemsize
            out = np.frombuffer(tail, dtype=mark.format.uint, count=slot.nbytes // width, offset=start)
            mark.marked(self.keys.code(self.layout.file, slot.name, recipient, mark.blocks), out=out)
        return tail

    def carrier_bits(self, recipient: str) -> dict[str, np.ndarray]:
        """Each carrier of `recipient`'s copy, as bits in its shape: the tail, unpacked."""
        tail = np.frombuffer(self.tail_for(recipient), dtype=np.uint8)
        carriers = {}
        for slot, mark in self.marks:
            start = slot.offset - self.layout.prefix_size
            carriers[slot.name] = tail[start : start + slot.nbytes].view(mark.format.uint).reshape(slot.shape)
        return carriers

    def prefix_state(self):
        """sha256 of the prefix, copied by every digest: resumed from the recorded state, or computed once."""
        if self._prefix_state is None:
            state = hashlib.sha256()
            for piece in self.prefix_pieces():
                state.update(piece)
            self._prefix_state = state
        return self._prefix_state

    def prefix_pieces(self) -> Iterator[bytes]:
        """The prefix's bytes, for a base whose prefix state was not recorded."""
        return read_file_range(self.path, 0, self.layout.prefix_size)

    def sha256(self, tail: bytes) -> str:
        """The sha256 of the copy whose tail is `tail`: the prefix's state, copied, fed the tail."""
        state = self.prefix_state().copy()
        state.update(tail)
        return state.hexdigest()

    def read(self, tail: bytes | None, start: int = 0, end: int | None = None) -> Iterator[bytes | memoryview]:
        """Bytes [start, end) of the copy whose tail is `tail` (None for a range of the prefix alone), in
        pieces: the prefix's from the base file."""
        return read_copy(self.path, self.layout, tail, start, end)

    def write_copy(self, destination: Path, tail: bytes) -> None:
        with open(destination, "wb") as out:
            for piece in self.read(tail):
                out.write(piece)


def prefix_digest() -> ResumableSha256 | None:
    """What `write_served_base` feeds a base's prefix to, so that the state after it can be recorded; None
    where this host cannot resume one (each web process then hashes the prefix itself)."""
    return ResumableSha256() if sha256_state.available() else None


def recordable_prefix_state(digest: ResumableSha256, base: Path, layout: ServedLayout) -> tuple[dict, str]:
    """The state `digest` holds after the base's prefix, to record, and the sha256 it gives once carried as
    JSON, resumed and fed the base's tail, as a web process will do: record it only when that is the base's
    sha256 as verified. Reads the tail only."""
    state = digest.state()
    resumed = ResumableSha256.from_state(json.loads(json.dumps(state)))
    for piece in read_file_range(Path(base), layout.prefix_size, layout.size):
        resumed.update(piece)
    return state, resumed.hexdigest()


def resumed_prefix_state(recorded: dict, layout: ServedLayout, base_tail: bytes, path):
    """The recorded prefix state, taken up again once it is shown to give the base's recorded sha256 with
    `base_tail`; None when none was recorded or this host cannot resume one (the prefix is hashed then)."""
    if not recorded.get("prefix_state") or not sha256_state.available():
        return None
    state = ResumableSha256.from_state(recorded["prefix_state"])
    whole = state.copy()
    whole.update(base_tail)
    if state.length != layout.prefix_size or whole.hexdigest() != recorded.get("sha256"):
        raise ValueError(f"{path}: the prefix state recorded with it does not give its recorded sha256")
    return state


def split_range(layout: ServedLayout, start: int, end: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Which part of [start, end) of a copy is the base file's prefix (offsets in the file, for sendfile)
    and which part the tail (offsets in the tail)."""
    prefix = (start, min(end, layout.prefix_size)) if start < min(end, layout.prefix_size) else None
    tail_start, tail_end = max(start, layout.prefix_size), end
    tail = (tail_start - layout.prefix_size, tail_end - layout.prefix_size) if tail_start < tail_end else None
    return prefix, tail


def read_file_range(path: Path, start: int, end: int) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            piece = handle.read(min(CHUNK, left))
            if not piece:
                raise ValueError(f"{path} ended at {end - left}, before {end}")
            yield piece
            left -= len(piece)


def read_copy(
    path: Path, layout: ServedLayout, tail: bytes | None, start: int = 0, end: int | None = None
) -> Iterator[bytes | memoryview]:
    """Bytes [start, end) of a recipient's copy, with `path` the base file and `tail` the recipient's (None
    when the range ends within the prefix)."""
    end = layout.size if end is None else end
    check_range(layout, tail, start, end)
    return copy_pieces(path, tail, *split_range(layout, start, end))


def check_range(layout: ServedLayout, tail: bytes | None, start: int, end: int) -> None:
    """ValueError unless [start, end) is within the copy and `tail` is its whole tail (or the range needs none)."""
    wrong_tail = (end > layout.prefix_size or tail is not None) and len(tail or b"") != layout.tail_size
    if not 0 <= start <= end <= layout.size or wrong_tail:
        size = "no tail" if tail is None else f"a tail of {len(tail)} bytes"
        raise ValueError(f"range [{start}, {end}) of a {layout.size}-byte copy, {size}")


def copy_pieces(path, tail, prefix, tail_part) -> Iterator[bytes | memoryview]:
    if prefix is not None:
        yield from read_file_range(path, *prefix)
    if tail_part is not None:
        view = memoryview(tail)
        for offset in range(tail_part[0], tail_part[1], CHUNK):
            yield view[offset : min(offset + CHUNK, tail_part[1])]


def copy_digests(files: Mapping[str, ServedFile], recipient: str, fixed: Mapping[str, str]) -> dict[str, str]:
    """Every file's sha256 in `recipient`'s copy: the served files' computed, the others' (`fixed`) as they are.
    What a copy's manifest and signature list; it reads no more than the tails it makes, one file per core."""
    digests = dict(fixed)
    made = on_cores(lambda served: served.sha256(served.tail_for(recipient)), list(files.values()))
    digests.update(zip(files, made, strict=True))
    return digests


def on_cores(function, items: list) -> list:
    """`function` of each item, in order, on as many threads as there are cores: marking (numpy) and hashing
    (OpenSSL) release the GIL, so a copy of a release of many files costs its tails spread over the cores."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(len(items), usable_cpus()), thread_name_prefix="copy-tails") as pool:
        return list(pool.map(function, items))
