"""Loading tensors for the smoke pass from the same read that hashes and scans them.

A `TensorSink` receives each tensor's bytes as the scan streams past, straight into buffers on the
smoke device (or on each block's device, or in host memory until the block's turn, as the model's
placement says), so the forward pass runs on exactly the bytes whose sha256 was just computed, and
a shard is read once for everything.
"""

import threading
import warnings

import numpy

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


# Whether the tensors of one file that live until the forward pass ends (whole, or held in host memory) share
# one allocation, a slice each at a CARVE_ALIGN boundary, instead of one allocation each: on a GPU, one
# cudaMalloc per file instead of one per tensor, 1.06x the cold-read floor against 1.14x (median of nine
# rounds on an H200, bench/results/gpu-verify.md; its arm "one allocation per tensor" keeps measuring it).
ONE_ALLOCATION_PER_FILE = True
CARVE_ALIGN = 256  # bytes: what CUDA's own allocations are aligned to, and any element size divides


class UnloadableTensor(Exception):
    pass


def carved(entries: dict, device) -> dict:
    """One uint8 buffer on `device` for all of `entries` (a file's tensors), each tensor a slice of it."""
    import torch

    starts, total = {}, 0
    for name, entry in entries.items():
        starts[name] = total
        total += -(-entry.nbytes // CARVE_ALIGN) * CARVE_ALIGN
    whole = torch.empty(total, dtype=torch.uint8, device=device)
    return {name: whole[start : start + entries[name].nbytes] for name, start in starts.items()}


def torch_dtype(entry):
    import torch

    dtype_name = SAFETENSORS_TO_TORCH.get(entry.dtype)
    dtype = getattr(torch, dtype_name, None) if dtype_name else None
    if dtype is None:
        raise UnloadableTensor(f"tensor {entry.name!r} is {entry.dtype}, which torch cannot load")
    return dtype


def meta_tensors(entries: dict) -> dict:
    """Tensors of the checkpoint's names, shapes and dtypes that hold nothing: a model built around them
    has the real model's structure while each block's weights are brought in only when it runs."""
    import torch

    return {name: torch.empty(entry.shape, dtype=torch_dtype(entry), device="meta") for name, entry in entries.items()}


def dominant_dtype(entries: dict) -> str | None:
    """The safetensors dtype that holds most of the bytes: the one the forward pass computes in."""
    totals: dict[str, int] = {}
    for entry in entries.values():
        totals[entry.dtype] = totals.get(entry.dtype, 0) + entry.nbytes
    return max(totals, key=totals.__getitem__, default=None)


class TensorSink:
    """Buffers for each tensor, filled from the hashing read: on the smoke device (whole), on each
    block's device (spread, through `device_for`), or in host memory until their block runs (streamed)."""

    def __init__(self, device, *, placement=None, device_for=None):
        self.device = device
        self.device_for = device_for  # tensor name -> its block's device (or None), where blocks are spread
        self.placement = placement  # where the model runs (verification.core.placement); None: whole on `device`
        self.buffers = {}
        self.host_arrays = {}  # tensor name -> its host buffer as a numpy array
        self.entries = {}
        self.lock = threading.Lock()

    def begin(self, header) -> None:
        import torch

        if ONE_ALLOCATION_PER_FILE and self.device_for is None:
            buffers = carved(header.tensors, self.device)
        else:
            buffers = {
                name: torch.empty(entry.nbytes, dtype=torch.uint8, device=self.device_of(name))
                for name, entry in header.tensors.items()
            }
        # Host buffers are filled by numpy in the scan's own thread: torch's copy spreads each chunk over its
        # thread pool, which stalls whenever another thread or process holds a core, and a memoryview's copy
        # holds the GIL through every page fault of a fresh buffer, which stalls the other files' scans.
        host_arrays = {name: buffer.numpy() for name, buffer in buffers.items() if buffer.is_cpu}
        with self.lock:
            self.buffers.update(buffers)
            self.host_arrays.update(host_arrays)
            self.entries.update(header.tensors)

    def device_of(self, name: str):
        return (self.device_for(name) if self.device_for is not None else None) or self.device

    def write(self, name: str, offset: int, piece: memoryview) -> None:
        import torch

        host_array = self.host_arrays.get(name)
        if host_array is not None:
            numpy.copyto(host_array[offset : offset + len(piece)], numpy.frombuffer(piece, dtype=numpy.uint8))
            return
        with warnings.catch_warnings():  # the source is a read-only map; it is only read
            warnings.simplefilter("ignore", UserWarning)
            source = torch.frombuffer(piece, dtype=torch.uint8)
        self.buffers[name][offset : offset + len(piece)].copy_(source)

    def tensors(self, names=None) -> dict:
        """The received tensors, typed and shaped (views of the buffers, no copy)."""
        result = {}
        for name in names if names is not None else self.buffers:
            entry = self.entries[name]
            result[name] = self.buffers[name].view(torch_dtype(entry)).reshape(entry.shape)
        return result

    def load(self, names, device, slot: int = 0) -> dict:
        """Some tensors on `device`, for the block about to run (no copy when they are there already).

        `slot` is for sources that reuse buffers from block to block; these tensors stay where they are."""
        return {name: tensor.to(device) for name, tensor in self.tensors(names).items()}

    def open(self) -> None:
        """Nothing to prepare: the tensors arrived during the hashing read."""

    def close(self) -> None:
        """Nothing to release before the buffers themselves are dropped."""
