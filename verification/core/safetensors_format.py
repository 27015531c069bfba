"""A strict reader of safetensors headers that rejects whatever the reference (Rust) parser rejects.

It reads the 8-byte length and the JSON header only, never the tensor data, and checks that the
tensors tile the data area exactly, so a truncated, padded or polyglot file is caught before use.
Each rejection carries its own code so reports and tests can tell the failures apart.
"""

import json
import struct
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 100_000_000

# Element sizes in bits, as the reference implementation defines them.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
# Rust's usize: a shape or byte count past it overflows in the reference parser.
USIZE_MAX = 2**64 - 1


class SafetensorsError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets are relative to the start of the data area
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class SafetensorsHeader:
    header_length: int
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_length

    @property
    def data_length(self) -> int:
        return max((entry.end for entry in self.tensors.values()), default=0)

    def by_offset(self) -> list[TensorEntry]:
        return sorted(self.tensors.values(), key=lambda entry: (entry.start, entry.end))


def _reject_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise SafetensorsError("DuplicateKey", f"the header names {key!r} twice")
        seen[key] = value
    return seen


def _is_usize(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= USIZE_MAX


def _tensor_entry(name: str, info) -> TensorEntry:
    if not isinstance(info, dict):
        raise SafetensorsError("InvalidTensorInfo", f"tensor {name!r}: its entry is not an object")
    missing = {"dtype", "shape", "data_offsets"} - info.keys()
    if missing:
        raise SafetensorsError("InvalidTensorInfo", f"tensor {name!r}: missing {', '.join(sorted(missing))}")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise SafetensorsError("UnknownDtype", f"tensor {name!r}: unknown dtype {dtype!r}")
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_usize(dim) for dim in shape):
        raise SafetensorsError("InvalidTensorInfo", f"tensor {name!r}: shape must be a list of non-negative integers")
    offsets = info["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_usize(o) for o in offsets):
        raise SafetensorsError("InvalidTensorInfo", f"tensor {name!r}: data_offsets must be two non-negative integers")
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(tensors: dict[str, TensorEntry]) -> int:
    """The tensors must tile [0, end) in offset order, each exactly as long as shape times dtype says."""
    position = 0
    for entry in sorted(tensors.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position or entry.end < entry.start:
            what = "overlaps the tensor before it" if entry.start < position else "leaves a gap before it"
            if entry.end < entry.start:
                what = "ends before it starts"
            raise SafetensorsError("InvalidOffset", f"tensor {entry.name!r} at [{entry.start}, {entry.end}) {what}")
        position = entry.end
        numel = 1
        for dim in entry.shape:
            numel *= dim
            if numel > USIZE_MAX:
                raise SafetensorsError(
                    "ValidationOverflow", f"tensor {entry.name!r}: shape {list(entry.shape)} overflows"
                )
        bits = numel * DTYPE_BITS[entry.dtype]
        if bits > USIZE_MAX:
            raise SafetensorsError("ValidationOverflow", f"tensor {entry.name!r}: byte size overflows")
        if bits % 8:
            raise SafetensorsError(
                "MisalignedSlice",
                f"tensor {entry.name!r}: {numel} elements of {entry.dtype} do not fill a whole number of bytes",
            )
        if entry.nbytes != bits // 8:
            raise SafetensorsError(
                "TensorInvalidInfo",
                f"tensor {entry.name!r}: offsets span {entry.nbytes} bytes but shape {list(entry.shape)} "
                f"of {entry.dtype} needs {bits // 8}",
            )
    return position


def parse_header_bytes(prefix: bytes, file_size: int) -> SafetensorsHeader:
    """Parse a header from the first bytes of a file whose total size is `file_size`.

    `prefix` must hold at least the 8-byte length and the header (or the whole file if shorter).
    """
    if file_size < 8 or len(prefix) < 8:
        raise SafetensorsError("HeaderTooSmall", f"the file has {file_size} bytes, fewer than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES:
        raise SafetensorsError("HeaderTooLarge", f"the header claims {length} bytes, over the {MAX_HEADER_BYTES} limit")
    if 8 + length > file_size:
        raise SafetensorsError(
            "InvalidHeaderLength",
            f"the header claims {length} bytes but the file holds {file_size - 8} after the length",
        )
    raw = prefix[8 : 8 + length]
    if len(raw) != length:
        raise ValueError("prefix is shorter than the header it announces")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SafetensorsError("InvalidHeaderUtf8", f"the header is not UTF-8 (byte {error.start})") from None
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except SafetensorsError:
        raise
    except (ValueError, RecursionError) as error:
        raise SafetensorsError("InvalidHeaderJson", f"the header is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise SafetensorsError("InvalidHeaderJson", "the header is JSON but not an object")
    metadata = document.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError("InvalidMetadata", "__metadata__ must map strings to strings")
    tensors = {name: _tensor_entry(name, info) for name, info in document.items()}
    data_end = _check_layout(tensors)
    data_size = file_size - 8 - length
    if data_end != data_size:
        where = "before" if data_end < data_size else "after"
        raise SafetensorsError(
            "MetadataIncompleteBuffer",
            f"the tensors end at byte {data_end} of the data area, {where} its end at {data_size}: "
            + ("trailing bytes follow the last tensor" if where == "before" else "the file is truncated"),
        )
    return SafetensorsHeader(header_length=length, tensors=tensors, metadata=metadata)
