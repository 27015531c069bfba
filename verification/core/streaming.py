"""One forward pass of a model whose blocks are not all on one device at once.

Streamed: the model is built with its parameters on the meta device (nothing allocated). Before a
block runs, a forward pre-hook gives it its tensors on the device; once it has run, a forward hook
puts the empty ones back, so the device holds one block (two while the next one loads) and the
activations. The modules, their code and the order of operations are transformers' own, so the
logits are the whole model's, bit for bit on the same device.

Spread: every block's tensors are already on its device; a pre-hook moves the block's inputs there.

Why not accelerate's hooks (`dispatch_model` with an offload index): they do the same swap, but
their loader reads a state dict or opens safetensors files by path (`safe_open`, a memory map), so
an S3 stream cannot feed it, nothing checks that the bytes are those hashed, and each block loads
only once its turn has come. Here the source is the smoke pass's own: the tensors held since the
hashing read, or a block read again from the files, with the next block loading while one runs.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

from verification.core.blocks import ArchitectureNotStreamable


def attach(module, tensors: dict) -> list:
    """Give a block its tensors (names inside the block -> tensors); return what to put back afterwards."""
    import torch

    saved = []
    for local, tensor in tensors.items():
        owner_path, _, leaf = local.rpartition(".")
        owner = module.get_submodule(owner_path)
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
    return saved


def detach(saved: list) -> None:
    """Put the empty (meta) parameters back, which frees the block's tensors."""
    for owner, leaf, original in saved:
        owner._parameters[leaf] = original


class BlockStream:
    """Brings each block's tensors to the device just before it runs and drops them after.

    `source.load(names, device)` gives checkpoint tensors on the device; `tensor_names[i]` maps the
    names inside block i to checkpoint names (a tied head names the embedding it shares).
    """

    def __init__(self, blocks, tensor_names, source, device, *, prefetch: bool):
        self.names = [name for name, _ in blocks]
        self.modules = [module for _, module in blocks]
        self.tensor_names = tensor_names
        self.source, self.device = source, device
        self.block_bytes = [sum(source.entries[name].nbytes for name in set(names.values())) for names in tensor_names]
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-block") if prefetch else None
        self.pending = {}  # block index -> the load of its tensors under way
        self.saved = {}
        self.ran = set()
        self.peak_bytes = 0

    def load(self, index: int):
        # With the next block loading while one runs, two slots: block i - 2 has been let go by then.
        slot = index % 2 if self.loader is not None else 0
        return self.source.load(sorted(set(self.tensor_names[index].values())), self.device, slot=slot)

    def before(self, index: int) -> None:
        future = self.pending.pop(index, None)
        loaded = future.result() if future is not None else self.load(index)
        if self.loader is not None and index + 1 < len(self.modules):
            self.pending[index + 1] = self.loader.submit(self.load, index + 1)
        ahead = self.block_bytes[index + 1] if index + 1 in self.pending else 0
        self.peak_bytes = max(self.peak_bytes, self.block_bytes[index] + ahead)
        tensors = {local: loaded[name] for local, name in self.tensor_names[index].items()}
        self.saved[index] = attach(self.modules[index], tensors)

    def after(self, index: int) -> None:
        detach(self.saved.pop(index))
        self.ran.add(index)

    @contextlib.contextmanager
    def hooks(self):
        handles = []
        for index, module in enumerate(self.modules):
            handles.append(module.register_forward_pre_hook(lambda _m, _a, i=index: self.before(i)))
            handles.append(module.register_forward_hook(lambda _m, _a, _o, i=index: self.after(i)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for future in self.pending.values():
                future.cancel()
            if self.loader is not None:
                self.loader.shutdown(wait=True)
            for saved in self.saved.values():
                detach(saved)
        skipped = [self.names[index] for index in range(len(self.modules)) if index not in self.ran]
        if skipped:
            raise ArchitectureNotStreamable(f"the forward pass did not call {', '.join(skipped[:3])} as modules")


def moved(value, device):
    """`value` with every tensor in it (inside tuples, lists and dicts too) on `device`."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value) in (tuple, list):
        return type(value)(moved(item, device) for item in value)
    if type(value) is dict:
        return {key: moved(item, device) for key, item in value.items()}
    return value


@contextlib.contextmanager
def inputs_follow(blocks_on_devices):
    """While it lasts, each block's inputs are moved to the device its weights are on."""
    handles = [
        module.register_forward_pre_hook(
            lambda _m, args, kwargs, d=device: (moved(args, d), moved(kwargs, d)), with_kwargs=True
        )
        for module, device in blocks_on_devices
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def move_buffers(module, device) -> None:
    """Computed buffers (rotary tables) to `device`; parameters stay where they are."""
    for owner in module.modules():
        for name, buffer in owner._buffers.items():
            if buffer is not None and not buffer.is_meta:
                owner._buffers[name] = buffer.to(device)
