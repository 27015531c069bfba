"""One read per file: the sha256 and the strict safetensors header come from the same pass over the bytes."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from verification.safetensors_format import SafetensorsError, SafetensorsHeader, read_header

CHUNK_BYTES = 8 * 1024 * 1024


class HashingReader:
    """A file wrapper that feeds every byte read through a sha256, so parsing and hashing share the read."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.bytes_read = 0
        self.head = b""  # the first bytes, for recognising a file by its content

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        if len(self.head) < 8:
            self.head += data[: 8 - len(self.head)]
        self.digest.update(data)
        self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        while chunk := self.read(CHUNK_BYTES):
            del chunk


@dataclass
class FileScan:
    path: str
    size: int
    sha256: str
    head: bytes
    header: SafetensorsHeader | None = None
    header_error: SafetensorsError | None = None


def scan_file(root: Path, relative: str) -> FileScan:
    path = root / relative
    size = path.stat().st_size
    header = header_error = None
    with path.open("rb") as handle:
        reader = HashingReader(handle)
        if relative.endswith(".safetensors"):
            try:
                header = read_header(reader, size)
            except SafetensorsError as error:
                header_error = error
        reader.drain()
    if reader.bytes_read != size:
        raise OSError(f"{relative} changed size while it was read ({size} then {reader.bytes_read} bytes)")
    return FileScan(relative, size, reader.digest.hexdigest(), reader.head, header, header_error)
