"""One tiny traceable release for the tracing tests: a 4-layer LLaMA (hidden 128) in bf16, two shards,
its served base files, a key, twenty recipients and a tracer."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tracing import synthetic
from tracing.floats import to_float32
from tracing.keys import CopyKeys, TraceKey
from tracing.safetensors_file import read_header, read_raw
from tracing.served import ServedFile, write_served_base
from tracing.tracer import CodeBook, OriginalCarriers, Tracer, choose_carriers

CONFIG = synthetic.llama_config(hidden=128, intermediate=384, layers=4, heads=4, kv_heads=4, vocab=512)
# The tiny model has fewer weights than a real one by far: every candidate carries (163,840 weights).
BUDGET = {"max_fraction": 1.0}
SECRET = bytes(range(32))


@dataclass
class Release:
    original: Path  # the verified checkpoint
    served: Path  # its served base files
    files: list[str]
    carriers: list[str]
    keys: CopyKeys
    served_files: dict[str, ServedFile]
    tracer: Tracer
    codebook: CodeBook

    def write_copy(self, recipient: str, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for file, served in self.served_files.items():
            served.write_copy(directory / file, served.tail_for(recipient))
        return directory

    def carriers_of(self, recipient: str) -> dict[str, np.ndarray]:
        """A recipient's carriers as float32, from the served files' tails."""
        values = {}
        for served in self.served_files.values():
            for name, bits in served.carrier_bits(recipient).items():
                values[name] = to_float32(bits, "BF16")
        return values


def read_all(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors files in `directory`, as float32 in its shape."""
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        header = read_header(path)
        for entry in header.entries.values():
            tensors[entry.name] = to_float32(read_raw(path, header, entry), entry.dtype).reshape(entry.shape)
    return tensors


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Release:
    root = tmp_path_factory.mktemp("release")
    files = synthetic.write_checkpoint(root / "original", CONFIG, synthetic.random_weights(CONFIG))
    carriers = choose_carriers({file: root / "original" / file for file in files}, **BUDGET)
    keys = CopyKeys(TraceKey(SECRET), "org/tiny", "0123abcd")
    (root / "served").mkdir()
    served_files = {}
    for file in files:
        layout = write_served_base(root / "original" / file, root / "served" / file, file, carriers)
        served_files[file] = ServedFile(root / "served" / file, layout, keys)
    tracer = Tracer(OriginalCarriers.from_directory(root / "original", carriers), keys)
    codebook = tracer.codebook([f"grant-{number}" for number in range(20)])
    return Release(root / "original", root / "served", files, carriers, keys, served_files, tracer, codebook)


@pytest.fixture(scope="session")
def copies(release, tmp_path_factory):
    """grant-1's and grant-2's copies, written whole: recipient -> directory."""
    root = tmp_path_factory.mktemp("copies")
    return {recipient: release.write_copy(recipient, root / recipient) for recipient in ("grant-1", "grant-2")}
