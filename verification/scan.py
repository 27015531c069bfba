"""One read per file: the sha256, the strict safetensors header and the tensor scan share one pass.

Each chunk is read once into a reused buffer, hashed, and handed to the tensor scanner, so memory
stays bounded by the chunk size whatever the shard size.
"""

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

from verification.safetensors_format import SafetensorsError, SafetensorsHeader, read_header
from verification.tensor_scan import TensorScanner, TensorStats

CHUNK_BYTES = 2 * 1024 * 1024


class HashingReader:
    """A stream wrapper that feeds every byte read through a sha256, so parsing and hashing share the read."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.digest = hashlib.sha256()
        self.bytes_read = 0
        self.head = b""  # the first bytes, for recognising a file by its content
        self._buffer = bytearray(CHUNK_BYTES)
        self._view = memoryview(self._buffer)

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self._account(data)
        return data

    def read_chunk(self) -> memoryview:
        """The next chunk in the reused buffer (valid until the next call); empty at the end."""
        if hasattr(self.stream, "readinto"):
            count = self.stream.readinto(self._buffer)
            chunk = self._view[: count or 0]
        else:  # S3 bodies only offer read()
            chunk = memoryview(self.stream.read(CHUNK_BYTES))
        self._account(chunk)
        return chunk

    def _account(self, data) -> None:
        if len(self.head) < 8:
            self.head += bytes(data[: 8 - len(self.head)])
        self.digest.update(data)
        self.bytes_read += len(data)


@dataclass
class FileScan:
    path: str
    size: int
    sha256: str
    head: bytes
    header: SafetensorsHeader | None = None
    header_error: SafetensorsError | None = None
    tensors: list[TensorStats] = field(default_factory=list)


def scan_stream(path: str, size: int, stream: BinaryIO, *, progress=None) -> FileScan:
    """Hash a file and, for safetensors, check its header and scan its tensors, reading it once.

    `progress(bytes)` is called after each chunk, so a caller can show liveness.
    """
    reader = HashingReader(stream)
    header = header_error = scanner = None
    if path.endswith(".safetensors"):
        try:
            header = read_header(reader, size)
            scanner = TensorScanner(header)
        except SafetensorsError as error:
            header_error = error
    while chunk := reader.read_chunk():
        if scanner is not None:
            scanner.feed(chunk)
        if progress is not None:
            progress(len(chunk))
    if reader.bytes_read != size:
        raise OSError(f"{path} changed size while it was read ({size} then {reader.bytes_read} bytes)")
    tensors = scanner.finish() if scanner is not None else []
    return FileScan(path, size, reader.digest.hexdigest(), reader.head, header, header_error, tensors)
