"""Reading a leaked copy: safetensors files of any float dtype, or GGUF files (F32, F16, BF16 and the
quantizations the gguf package dequantizes, Q8_0 and Q4_0 among them), any subset of a checkpoint's
files, or directories of them. Tensors are matched to the original's carriers by layer and role,
whether transformers or llama.cpp named them and whatever prefix a tool put before `layers.`.

Whatever cannot be read as one of these is a TracingInputError naming the file (exit code 2 for a
command); tensors that are not carriers are never read.
"""

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from tracing.carriers import carrier_slot
from tracing.errors import TracingInputError
from tracing.floats import ITEM_BYTES, to_float32
from tracing.safetensors_file import read_header, read_raw

SUFFIXES = (".safetensors", ".gguf")


def leak_files(paths: Iterable[Path | str]) -> list[Path]:
    """The files to read: each path named, or the safetensors and GGUF files under a directory."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            if not found:
                raise TracingInputError(f"{path}: a directory with no .safetensors or .gguf file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise TracingInputError(f"{path}: no such file or directory")
    return files


def read_leak(paths: Iterable[Path | str], wanted: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The carriers a leak holds, as float32 in the original's orientation: original name -> array.

    `wanted` maps each carrier's original name to its shape."""
    slots = {carrier_slot(name): (name, tuple(shape)) for name, shape in wanted.items()}
    found, source = {}, {}
    for path in leak_files(paths):
        for name, values in read_file(path, slots):
            if name in found:
                raise TracingInputError(
                    f"{path}: holds {name} again (also in {source[name]}); trace each copy on its own"
                )
            found[name], source[name] = values, path
    return found


def read_file(path: Path, slots: dict) -> Iterable[tuple[str, np.ndarray]]:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise TracingInputError(f"{path}: cannot be read ({error.strerror or error})") from None
    return read_gguf(path, slots) if magic == b"GGUF" else read_safetensors(path, slots)


def oriented(path: Path, leaked: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if values.shape == shape:
        return values
    if values.shape == shape[::-1]:  # a converter that wrote the matrix transposed
        return values.T
    raise TracingInputError(f"{path}: {leaked} has shape {list(values.shape)}, the original's is {list(shape)}")


def read_safetensors(path: Path, slots: dict) -> list[tuple[str, np.ndarray]]:
    header = read_header(path)
    tensors = []
    for entry in header.entries.values():
        if (slot := carrier_slot(entry.name)) not in slots:
            continue
        if entry.dtype not in ITEM_BYTES:
            raise TracingInputError(f"{path}: {entry.name} is {entry.dtype}, not a float format this can read")
        values = to_float32(read_raw(path, header, entry), entry.dtype).reshape(entry.shape)
        name, shape = slots[slot]
        tensors.append((name, oriented(path, entry.name, values, shape)))
    return tensors


def read_gguf(path: Path, slots: dict) -> list[tuple[str, np.ndarray]]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(path)
    except Exception as error:  # a third-party parser on untrusted bytes: any failure means unreadable
        raise TracingInputError(f"{path}: not a GGUF file the gguf package can read ({error})") from None
    tensors = []
    for tensor in reader.tensors:
        if (slot := carrier_slot(tensor.name)) not in slots:
            continue
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except (NotImplementedError, ValueError) as error:
            kind = tensor.tensor_type.name
            raise TracingInputError(f"{path}: {tensor.name} ({kind}) cannot be read: {error}") from None
        # GGUF lists dimensions innermost first; the gguf reader gives arrays outermost first.
        values = values.reshape(tuple(int(dim) for dim in reversed(tensor.shape))).astype(np.float32, copy=False)
        name, shape = slots[slot]
        tensors.append((name, oriented(path, tensor.name, values, shape)))
    return tensors
