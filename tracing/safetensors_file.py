"""Reading and writing safetensors files at the byte level: the header's JSON and each tensor's bytes.

numpy has no bf16, so the safetensors package's numpy reader cannot give bf16 tensors; and a served
file's layout (carriers last) is a choice of offsets that its writer does not offer. Leaked files are
untrusted: every inconsistency is a TracingInputError that names the file.
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracing.errors import TracingInputError

MAX_HEADER_BYTES = 100_000_000
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # relative to the data area, as the header writes it
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Header:
    length: int  # of the JSON, padding included
    entries: dict[str, Entry]  # in offset order
    metadata: dict[str, str]
    size: int  # of the whole file

    @property
    def data_start(self) -> int:
        return 8 + self.length


def numel(shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def entry_from_json(name: str, info) -> Entry:
    try:
        dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"tensor {name!r} lacks a dtype, a shape or two data offsets") from None
    if dtype not in DTYPE_BITS:
        raise ValueError(f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not all(type(value) is int and value >= 0 for value in (*shape, start, end)):
        raise ValueError(f"tensor {name!r}: shape and offsets must be non-negative integers")
    if (end - start) * 8 != numel(shape) * DTYPE_BITS[dtype]:
        raise ValueError(f"tensor {name!r}: {end - start} bytes for shape {list(shape)} of {dtype}")
    return Entry(name, dtype, shape, start, end)


def parse_header(raw: bytes, size: int) -> Header:
    document = json.loads(raw.decode("utf-8"))
    if not isinstance(document, dict):
        raise ValueError("the header is not a JSON object")
    metadata = document.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError("__metadata__ is not an object")
    entries = sorted((entry_from_json(name, info) for name, info in document.items()), key=lambda e: e.start)
    position = 0
    for entry in entries:
        if entry.start != position:
            raise ValueError(f"tensor {entry.name!r} starts at {entry.start}, not where the one before ends")
        position = entry.end
    if 8 + len(raw) + position != size:
        raise ValueError(f"the tensors end at {8 + len(raw) + position} but the file has {size} bytes")
    return Header(len(raw), {entry.name: entry for entry in entries}, metadata, size)


def read_header(path: Path) -> Header:
    """The header of the safetensors file at `path`; TracingInputError if it is not a consistent one."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"its header claims {length} bytes")
            return parse_header(handle.read(length), size)
    except OSError as error:
        raise TracingInputError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise TracingInputError(f"{path}: not a safetensors file: {error}") from None


def read_raw(path: Path, header: Header, entry: Entry) -> np.ndarray:
    """A tensor's bytes, flat, as uint8."""
    raw = np.fromfile(path, dtype=np.uint8, count=entry.nbytes, offset=header.data_start + entry.start)
    if raw.size != entry.nbytes:
        raise TracingInputError(f"{path}: tensor {entry.name!r} is cut short")
    return raw


def encode_header(tensors: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]) -> tuple[bytes, int]:
    """The 8-byte length and the JSON of a header placing `tensors` (name, dtype, shape) in that order, padded
    with spaces to a multiple of 8 as the reference writer pads; and the size of the data area."""
    document, offset = {}, 0
    if metadata:
        document["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        nbytes = numel(shape) * DTYPE_BITS[dtype] // 8
        document[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(document, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_tensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict | None = None) -> None:
    """A safetensors file of `tensors` (name -> (dtype, array holding the bits or values of that dtype))."""
    layout = [(name, dtype, tuple(array.shape)) for name, (dtype, array) in tensors.items()]
    head, _ = encode_header(layout, metadata if metadata is not None else {"format": "pt"})
    with open(path, "wb") as out:
        out.write(head)
        for _, array in tensors.values():
            out.write(np.ascontiguousarray(array).tobytes())
