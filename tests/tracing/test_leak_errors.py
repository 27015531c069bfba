"""A leak that cannot be read says which file and what is wrong, as a TracingInputError (exit code 2)."""

import json
import struct

import numpy as np
import pytest

from tests.tracing.conftest import read_all
from tracing import attacks
from tracing.errors import TracingInputError
from tracing.tracer import trace

CARRIER = "model.layers.1.self_attn.v_proj.weight"


def header_file(path, header: dict, data: bytes = b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def cases(tmp_path, release):
    original = read_all(release.original)
    good = release.original / release.files[0]
    shape = list(original[CARRIER].shape)
    return {
        "garbage": (lambda p: p.write_bytes(b"this is not a model" * 10), "not a safetensors file"),
        "short": (lambda p: p.write_bytes(b"\x01\x02"), "shorter than"),
        "truncated": (lambda p: p.write_bytes(good.read_bytes()[:-100]), "the file has"),
        "huge header": (lambda p: p.write_bytes(struct.pack("<Q", 2**40) + b"{}"), "header claims"),
        "json array": (lambda p: header_file(p, []), "not a JSON object"),
        "no offsets": (lambda p: header_file(p, {CARRIER: {"dtype": "BF16", "shape": shape}}), "lacks"),
        "int8 carrier": (
            lambda p: header_file(
                p, {CARRIER: {"dtype": "I8", "shape": shape, "data_offsets": [0, int(np.prod(shape))]}},
                bytes(int(np.prod(shape))),
            ),
            "not a float format",
        ),
        "wrong shape": (
            lambda p: attacks.write_safetensors(p, {CARRIER: original[CARRIER][:, :64]}),
            "the original's is",
        ),
        "gguf garbage": (lambda p: p.write_bytes(b"GGUF" + b"\xff" * 64), "not a GGUF file"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["garbage", "short", "truncated", "huge header", "json array", "no offsets", "int8 carrier", "wrong shape",
     "gguf garbage"],
)  # fmt: skip
def test_a_malformed_leak_file_is_an_input_error_naming_it(release, tmp_path, case):
    make, message = cases(tmp_path, release)[case]
    path = tmp_path / "leak.safetensors"
    make(path)
    with pytest.raises(TracingInputError, match=message) as raised:
        trace([path], release.tracer, release.codebook)
    assert str(path) in str(raised.value)


def test_a_missing_path_or_an_empty_directory_is_an_input_error(release, tmp_path):
    with pytest.raises(TracingInputError, match="no such file"):
        trace([tmp_path / "nothing"], release.tracer, release.codebook)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TracingInputError, match=r"no \.safetensors or \.gguf"):
        trace([tmp_path / "empty"], release.tracer, release.codebook)


def test_two_copies_of_one_tensor_in_a_leak_are_refused(release, tmp_path):
    values = read_all(release.original)[CARRIER]
    attacks.write_safetensors(tmp_path / "a.safetensors", {CARRIER: values})
    attacks.write_gguf(tmp_path / "b.gguf", {CARRIER: values}, "Q8_0")
    with pytest.raises(TracingInputError, match="trace each copy on its own"):
        trace([tmp_path], release.tracer, release.codebook)
