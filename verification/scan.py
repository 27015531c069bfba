"""One read per file: the sha256, the strict safetensors header and the tensor scan share one pass.

Chunks come from a memory map of the file when it is local (no copy out of the page cache) or from
a reused buffer when it is a stream (S3); each chunk is hashed, the first ones also give the header,
and the rest go to the tensor scanner. Memory stays bounded by the window size whatever the shard size.
"""

import hashlib
import io
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from verification.safetensors_format import MAX_HEADER_BYTES, SafetensorsError, SafetensorsHeader, parse_header_bytes
from verification.tensor_scan import TensorScanner, TensorStats

CHUNK_BYTES = 1024 * 1024  # stays in a core's cache between hashing and scanning
MAP_WINDOW_BYTES = 16 * 1024 * 1024  # mapped at a time, so resident memory stays bounded


def stream_chunks(stream: BinaryIO) -> Iterator[memoryview]:
    if hasattr(stream, "readinto"):
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        while count := stream.readinto(buffer):
            yield view[:count]
    else:  # S3 bodies only offer read()
        while data := stream.read(CHUNK_BYTES):
            yield memoryview(data)


def mapped_chunks(descriptor: int, size: int) -> Iterator[memoryview]:
    # Each window is unmapped when the last chunk taken from it is dropped (no explicit close, which
    # would fail while a consumer still holds a view).
    for offset in range(0, size, MAP_WINDOW_BYTES):
        length = min(MAP_WINDOW_BYTES, size - offset)
        window = mmap.mmap(descriptor, length, access=mmap.ACCESS_READ, offset=offset)
        window.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(window)
        del window
        for start in range(0, length, CHUNK_BYTES):
            yield view[start : start + CHUNK_BYTES]
        del view


def chunks_of(stream: BinaryIO, size: int) -> Iterator[memoryview]:
    try:
        descriptor = stream.fileno()
        mappable = size > 0 and stat.S_ISREG(os.fstat(descriptor).st_mode)
    except (AttributeError, OSError, io.UnsupportedOperation):
        mappable = False
    return mapped_chunks(descriptor, size) if mappable else stream_chunks(stream)


@dataclass
class FileScan:
    path: str
    size: int
    sha256: str
    head: bytes
    header: SafetensorsHeader | None = None
    header_error: SafetensorsError | None = None
    tensors: list[TensorStats] = field(default_factory=list)


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
    collector = HeaderCollector(size) if path.endswith(".safetensors") else None
    scanner = None
    for chunk in chunks_of(stream, size):
        digest.update(chunk)
        read += len(chunk)
        if len(head) < 8:
            head += bytes(chunk[: 8 - len(head)])
        if collector is not None and not collector.done:
            chunk = collector.feed(chunk)
            if collector.header is not None:
                scanner = TensorScanner(collector.header, sink)
        if scanner is not None and len(chunk):
            scanner.feed(chunk)
        if progress is not None:
            progress(len(chunk))
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
