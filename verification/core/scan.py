"""One read per file: the sha256, the strict safetensors header and the tensor scan share one pass.

Chunks come from a memory map of the file when it is local (no copy out of the page cache) or from
a reused buffer when it is a stream (S3); each chunk is hashed, the first ones also give the header,
and the rest go to the tensor scanner. Memory stays bounded by the window size whatever the shard size.
When a local file is not in the page cache, a reader thread keeps a bounded distance ahead of the
hashing, so the disk works while the cores hash (otherwise each page fault stalls the hashing).
"""

import hashlib
import io
import mmap
import os
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from verification.core.safetensors_format import (
    MAX_HEADER_BYTES,
    SafetensorsError,
    SafetensorsHeader,
    TensorEntry,
    parse_header_bytes,
)
from verification.core.tensor_scan import TensorScanner, TensorStats

CHUNK_BYTES = 1024 * 1024  # stays in a core's cache between hashing and scanning
MAP_WINDOW_BYTES = 16 * 1024 * 1024  # mapped at a time, so resident memory stays bounded
# The first bytes of each file but weights, kept to tell its kind by content (a pickle of any protocol).
HEAD_BYTES = 64 * 1024
READ_AHEAD_WINDOWS = 4  # how far the reader thread may run ahead of the hashing; 0 turns it off


def stream_chunks(stream: BinaryIO) -> Iterator[memoryview]:
    if hasattr(stream, "readinto"):
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):
            yield view[:count]
    else:  # S3 bodies only offer read()
        while data := stream.read(CHUNK_BYTES):
            yield memoryview(data)


class ReadAhead:
    """Brings a file's windows into the page cache just ahead of the consumer, from its own thread.

    It skips windows already cached (a one-byte read of a window's end that must not wait), so a
    warm file costs a system call per window and nothing more; the bytes it reads are discarded.
    """

    def __init__(self, descriptor: int, size: int):
        self.descriptor, self.size = descriptor, size
        self.consumed = 0  # windows the consumer has finished
        self.budget = threading.Semaphore(READ_AHEAD_WINDOWS)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    @staticmethod
    def available() -> bool:
        return READ_AHEAD_WINDOWS > 0 and hasattr(os, "RWF_NOWAIT")  # Linux; elsewhere page faults read

    def _cached(self, end: int, probe: bytearray) -> bool:
        try:
            return os.preadv(self.descriptor, [probe], end - 1, os.RWF_NOWAIT) == 1
        except OSError:  # not cached (EAGAIN), or a file system without non-blocking reads
            return False

    def _run(self) -> None:
        buffer, probe = bytearray(CHUNK_BYTES), bytearray(1)
        window = 0
        try:
            while True:
                self.budget.acquire()
                window = max(window, self.consumed)  # never read what the consumer has passed
                start = window * MAP_WINDOW_BYTES
                if self.stopped or start >= self.size:
                    return
                end = min(start + MAP_WINDOW_BYTES, self.size)
                if not self._cached(end, probe):
                    for offset in range(start, end, CHUNK_BYTES):
                        os.preadv(self.descriptor, [buffer], offset)
                window += 1
        except OSError:
            return  # the consumer's own reads meet the error and report it

    def took_window(self) -> None:
        self.consumed += 1
        self.budget.release()

    def stop(self) -> None:
        self.stopped = True
        self.budget.release()


def mapped_chunks(descriptor: int, size: int) -> Iterator[memoryview]:
    # Each window is unmapped when the last chunk taken from it is dropped (no explicit close, which
    # would fail while a consumer still holds a view).
    ahead = ReadAhead(descriptor, size) if ReadAhead.available() else None
    if ahead is not None:
        ahead.thread.start()
    try:
        for offset in range(0, size, MAP_WINDOW_BYTES):
            length = min(MAP_WINDOW_BYTES, size - offset)
            window = mmap.mmap(descriptor, length, access=mmap.ACCESS_READ, offset=offset)
            window.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(window)
            del window
            for start in range(0, length, CHUNK_BYTES):
                yield view[start : start + CHUNK_BYTES]
            del view
            if ahead is not None:
                ahead.took_window()
    finally:
        if ahead is not None:
            ahead.stop()


def chunks_of(stream: BinaryIO, size: int) -> Iterator[memoryview]:
    try:
        descriptor = stream.fileno()
        mappable = size > 0 and stat.S_ISREG(os.fstat(descriptor).st_mode) and can_map(descriptor)
    except (AttributeError, OSError, io.UnsupportedOperation):
        mappable = False
    return mapped_chunks(descriptor, size) if mappable else stream_chunks(stream)


def can_map(descriptor: int) -> bool:
    """Whether the file's system maps files: some refuse (a FUSE mount in direct I/O mode), and such a
    file is read as a stream instead of failing as unreadable."""
    try:
        mmap.mmap(descriptor, 1, access=mmap.ACCESS_READ).close()
    except OSError:
        return False
    return True


@dataclass
class FileScan:
    path: str
    size: int
    sha256: str
    head: bytes
    header: SafetensorsHeader | None = None
    header_error: SafetensorsError | None = None
    tensors: list[TensorStats] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready, so a worker can store one file's scan for another to judge the whole checkpoint."""
        header = self.header
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "head": self.head.hex(),
            "header": None
            if header is None
            else {
                "header_length": header.header_length,
                "metadata": header.metadata,
                "tensors": [[e.name, e.dtype, list(e.shape), e.start, e.end] for e in header.tensors.values()],
            },
            "header_error": None if self.header_error is None else [self.header_error.code, self.header_error.message],
            "tensors": [stats.as_dict() for stats in self.tensors],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FileScan":
        header = data["header"]
        return cls(
            path=data["path"],
            size=data["size"],
            sha256=data["sha256"],
            head=bytes.fromhex(data["head"]),
            header=None
            if header is None
            else SafetensorsHeader(
                header_length=header["header_length"],
                tensors={
                    name: TensorEntry(name, dtype, tuple(shape), start, end)
                    for name, dtype, shape, start, end in header["tensors"]
                },
                metadata=header["metadata"],
            ),
            header_error=None if data["header_error"] is None else SafetensorsError(*data["header_error"]),
            tensors=[TensorStats(**stats) for stats in data["tensors"]],
        )


class HeaderCollector:
    """Gathers the length prefix and JSON header from the first chunks, then hands over the data area."""

    def __init__(self, size: int):
        self.size = size
        self.prefix = bytearray()
        self.needed = 8
        self.header: SafetensorsHeader | None = None
        self.error: SafetensorsError | None = None

    @property
    def done(self) -> bool:
        return self.header is not None or self.error is not None

    def feed(self, chunk: memoryview) -> memoryview:
        """Take what the header needs from `chunk`; return the rest (data-area bytes, once parsed)."""
        while not self.done and len(chunk):
            take = self.needed - len(self.prefix)
            self.prefix += chunk[:take]
            chunk = chunk[take:]
            if len(self.prefix) < self.needed:
                break
            if self.needed == 8:
                (length,) = struct.unpack("<Q", self.prefix)
                if length > MAX_HEADER_BYTES or 8 + length > self.size:
                    self._parse()  # raises the precise error
                self.needed = 8 + length
                if length:
                    continue
            self._parse()
        return chunk

    def finish(self) -> None:
        if not self.done:
            self._parse()  # a file too short for its own header

    def _parse(self) -> None:
        try:
            self.header = parse_header_bytes(bytes(self.prefix), self.size)
        except SafetensorsError as error:
            self.error = error


def scan_stream(path: str, size: int, stream: BinaryIO, *, progress=None, sink=None) -> FileScan:
    """Hash a file and, for safetensors, check its header and scan its tensors, reading it once.

    `progress(bytes)` is called after each chunk, so a caller can show liveness; `sink`, when given,
    receives the tensors' bytes from the same pass (to load them for the smoke pass).
    """
    digest, head, read = hashlib.sha256(), b"", 0
    kept = 8 if path.endswith(".safetensors") else HEAD_BYTES  # a shard's header is parsed, not sniffed
    collector = HeaderCollector(size) if path.endswith(".safetensors") else None
    scanner = None
    for chunk in chunks_of(stream, size):
        digest.update(chunk)
        taken = len(chunk)  # the header collector keeps part of the first chunks; progress counts them all
        read += taken
        if len(head) < kept:
            head += bytes(chunk[: kept - len(head)])
        if collector is not None and not collector.done:
            chunk = collector.feed(chunk)
            if collector.header is not None:
                scanner = TensorScanner(collector.header, sink)
        if scanner is not None and len(chunk):
            scanner.feed(chunk)
        if progress is not None:
            progress(taken)
    if read != size:
        raise OSError(f"{path} changed size while it was read ({size} then {read} bytes)")
    if collector is not None:
        collector.finish()
    return FileScan(
        path,
        size,
        digest.hexdigest(),
        head,
        collector.header if collector else None,
        collector.error if collector else None,
        scanner.finish() if scanner is not None else [],
    )
