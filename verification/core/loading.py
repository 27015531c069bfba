"""Loading tensors for the smoke pass from the same read that hashes and scans them.

A `TensorSink` receives each tensor's bytes as the scan streams past, straight into buffers on the
smoke device, so the forward pass runs on exactly the bytes whose sha256 was just computed, and
a shard is read once for everything.
"""

import threading
import warnings

SAFETENSORS_TO_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


class UnloadableTensor(Exception):
    pass


class TensorSink:
    def __init__(self, device):
        self.device = device
        self.buffers = {}
        self.entries = {}
        self.lock = threading.Lock()

    def begin(self, header) -> None:
        import torch

        buffers = {
            name: torch.empty(entry.nbytes, dtype=torch.uint8, device=self.device)
            for name, entry in header.tensors.items()
        }
        with self.lock:
            self.buffers.update(buffers)
            self.entries.update(header.tensors)

    def write(self, name: str, offset: int, piece: memoryview) -> None:
        import torch

        with warnings.catch_warnings():  # the source is a read-only map; it is only read
            warnings.simplefilter("ignore", UserWarning)
            source = torch.frombuffer(piece, dtype=torch.uint8)
        self.buffers[name][offset : offset + len(piece)].copy_(source)

    def tensors(self, names=None) -> dict:
        """The received tensors, typed and shaped (views of the buffers, no copy)."""
        import torch

        result = {}
        for name in names if names is not None else self.buffers:
            entry = self.entries[name]
            dtype_name = SAFETENSORS_TO_TORCH.get(entry.dtype)
            dtype = getattr(torch, dtype_name, None) if dtype_name else None
            if dtype is None:
                raise UnloadableTensor(f"tensor {name!r} is {entry.dtype}, which torch cannot load")
            result[name] = self.buffers[name].view(dtype).reshape(entry.shape)
        return result
