"""Mutated safetensors headers: the strict reader never crashes, never hangs, never accepts a file
the reference parser refuses."""

import json
import struct

import numpy as np
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from verification.core.safetensors_format import DTYPE_BITS, SafetensorsError, parse_header_bytes

SHAPES = st.lists(st.integers(min_value=0, max_value=4), min_size=0, max_size=3)
NUMPY_DTYPES = [np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_]


@st.composite
def valid_files(draw) -> bytes:
    count = draw(st.integers(min_value=0, max_value=4))
    tensors = {}
    for index in range(count):
        shape = tuple(draw(SHAPES))
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        tensors[f"t{index}"] = np.zeros(shape, dtype=dtype)
    return save(tensors, metadata=draw(st.none() | st.just({"format": "np"})))


def split(buffer: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", buffer[:8])
    return json.loads(buffer[8 : 8 + length]), buffer[8 + length :]


def join(header, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_files(draw) -> bytes:
    buffer = draw(valid_files())
    header, data = split(buffer)
    names = [name for name in header if name != "__metadata__"]
    kind = draw(
        st.sampled_from(["flip", "truncate", "extend", "field", "dtype", "offsets", "shape", "metadata", "length"])
    )
    if kind == "flip" and len(buffer) > 8:
        position = draw(st.integers(min_value=0, max_value=len(buffer) - 1))
        value = draw(st.integers(min_value=0, max_value=255))
        return buffer[:position] + bytes([value]) + buffer[position + 1 :]
    if kind == "truncate":
        return buffer[: draw(st.integers(min_value=0, max_value=len(buffer)))]
    if kind == "extend":
        return buffer + draw(st.binary(min_size=1, max_size=16))
    if kind == "length":
        return struct.pack("<Q", draw(st.integers(min_value=0, max_value=2**64 - 1))) + buffer[8:]
    if kind == "metadata":
        header["__metadata__"] = draw(JSON_VALUES)
        return join(header, data)
    if not names:
        header[draw(st.text(max_size=4))] = draw(JSON_VALUES)
        return join(header, data)
    name = draw(st.sampled_from(names))
    if kind == "field":
        header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSON_VALUES)
    elif kind == "dtype":
        header[name]["dtype"] = draw(st.sampled_from([*DTYPE_BITS, "F128", "f32", ""]))
    elif kind == "offsets":
        header[name]["data_offsets"] = draw(st.lists(st.integers(min_value=0, max_value=64), min_size=0, max_size=3))
    else:
        header[name]["shape"] = draw(st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4))
    return join(header, data)


def reference_accepts(buffer: bytes) -> bool:
    try:
        safetensors.deserialize(buffer)
    except Exception:  # the reference raises several exception types
        return False
    return True


@settings(max_examples=600, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_mutated_headers_get_the_same_verdict_as_the_reference(buffer):
    try:
        parse_header_bytes(buffer, len(buffer))
    except SafetensorsError as error:
        assert not reference_accepts(buffer), f"refused ({error.code}) a file the reference accepts"
        return
    assert reference_accepts(buffer), "accepted a file the reference parser refuses"


@settings(max_examples=200, deadline=500)
@given(valid_files())
def test_every_valid_file_is_accepted(buffer):
    header = parse_header_bytes(buffer, len(buffer))
    assert reference_accepts(buffer)
    assert header.data_start + header.data_length == len(buffer)
