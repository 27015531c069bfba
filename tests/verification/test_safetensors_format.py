"""The strict safetensors header reader, case by case and side by side with the reference parser."""

import json
import struct

import pytest
import safetensors

from verification.core.safetensors_format import DTYPE_BITS, SafetensorsError, parse_header_bytes


def file_bytes(header, data: bytes = b"", *, claimed_length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed_length is None else claimed_length) + raw + data


def tensor(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def reference_accepts(buffer: bytes) -> bool:
    try:
        safetensors.deserialize(buffer)
    except Exception:
        return False
    return True


REJECTED = [
    ("HeaderTooSmall", b"\x01\x02\x03"),
    ("HeaderTooLarge", file_bytes(b"{}", claimed_length=100_000_001)),
    ("InvalidHeaderLength", file_bytes(b"{}", claimed_length=64)),
    ("InvalidHeaderUtf8", file_bytes(b'{"\xff\xfe": 1}')),
    ("InvalidHeaderJson", file_bytes(b"{not json}")),
    ("InvalidHeaderJson", file_bytes(b"[1, 2]")),
    ("UnknownDtype", file_bytes({"t": tensor(dtype="F128")}, b"\0" * 4)),
    ("InvalidMetadata", file_bytes({"__metadata__": {"format": 1}})),
    ("InvalidTensorInfo", file_bytes({"t": tensor(shape=(-1,))}, b"\0" * 4)),
    ("InvalidOffset", file_bytes({"t": tensor(offsets=(4, 8))}, b"\0" * 8)),
    ("InvalidOffset", file_bytes({"a": tensor(offsets=(0, 4)), "b": tensor(offsets=(2, 6))}, b"\0" * 6)),
    ("ValidationOverflow", file_bytes({"t": tensor(shape=(2**62, 2**62))}, b"\0" * 4)),
    ("MisalignedSlice", file_bytes({"t": tensor(dtype="F4", shape=(3,), offsets=(0, 2))}, b"\0" * 2)),
    ("TensorInvalidInfo", file_bytes({"t": tensor(shape=(2,), offsets=(0, 4))}, b"\0" * 4)),
    ("MetadataIncompleteBuffer", file_bytes({"t": tensor()}, b"\0" * 5)),  # trailing bytes
    ("MetadataIncompleteBuffer", file_bytes({"t": tensor(shape=(4,), offsets=(0, 16))}, b"\0" * 16)[:-3]),
    ("MetadataIncompleteBuffer", file_bytes({"t": tensor()}, b"\0" * 4 + b"PK\x03\x04polyglot")),
]

ACCEPTED = [
    ("zero-size tensor", file_bytes({"t": tensor(shape=(0, 8), offsets=(0, 0))})),
    ("rank-0 tensor", file_bytes({"t": tensor(shape=())}, b"\0" * 4)),
    ("space padding", file_bytes(json.dumps({"t": tensor()}).encode() + b"      ", b"\0" * 4)),
    ("no tensors at all", file_bytes(b"{}")),
    ("metadata of strings", file_bytes({"__metadata__": {"format": "pt"}, "t": tensor()}, b"\0" * 4)),
    ("F4 packed in whole bytes", file_bytes({"t": tensor(dtype="F4", shape=(2,), offsets=(0, 1))}, b"\0")),
    ("F6 packed in whole bytes", file_bytes({"t": tensor(dtype="F6_E3M2", shape=(4,), offsets=(0, 3))}, b"\0" * 3)),
    ("offsets listed out of order", file_bytes({"b": tensor(offsets=(4, 8)), "a": tensor(offsets=(0, 4))}, b"\0" * 8)),
]


def parse(buffer: bytes):
    return parse_header_bytes(buffer, len(buffer))


@pytest.mark.parametrize(("code", "buffer"), REJECTED, ids=[f"{c}-{i}" for i, (c, _) in enumerate(REJECTED)])
def test_it_rejects_what_the_reference_rejects_with_its_own_code(code, buffer):
    with pytest.raises(SafetensorsError) as raised:
        parse(buffer)
    assert raised.value.code == code
    assert not reference_accepts(buffer)


@pytest.mark.parametrize(("name", "buffer"), ACCEPTED, ids=[name for name, _ in ACCEPTED])
def test_it_accepts_what_the_reference_accepts(name, buffer):
    assert reference_accepts(buffer)
    parse(buffer)


@pytest.mark.parametrize("dtype", sorted(DTYPE_BITS))
def test_every_dtype_the_reference_knows_is_accepted(dtype):
    count = 8  # a multiple of 8 elements fills whole bytes for every width
    nbytes = count * DTYPE_BITS[dtype] // 8
    buffer = file_bytes({"t": tensor(dtype=dtype, shape=(count,), offsets=(0, nbytes))}, b"\0" * nbytes)
    assert reference_accepts(buffer)
    assert parse(buffer).tensors["t"].nbytes == nbytes


def test_duplicate_tensor_names_are_refused_even_though_the_reference_takes_the_last():
    # Two parsers could pick different entries for one name; a release must not be ambiguous.
    raw = b'{"t":' + json.dumps(tensor()).encode() + b',"t":' + json.dumps(tensor()).encode() + b"}"
    buffer = file_bytes(raw, b"\0" * 4)
    assert reference_accepts(buffer)
    with pytest.raises(SafetensorsError) as raised:
        parse(buffer)
    assert raised.value.code == "DuplicateKey"


def test_a_file_the_reference_writes_is_read_back_exactly(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {"a": np.ones((3, 5), dtype=np.float16), "b": np.arange(7, dtype=np.int64)}
    save_file(arrays, tmp_path / "x.safetensors", metadata={"format": "np"})
    header = parse((tmp_path / "x.safetensors").read_bytes())
    assert {name: (e.dtype, e.shape) for name, e in header.tensors.items()} == {
        "a": ("F16", (3, 5)),
        "b": ("I64", (7,)),
    }
    assert header.metadata == {"format": "np"}
