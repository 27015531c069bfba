"""Where the smoke pass puts a model: whole on one device, spread over several, or streamed block by block.

Plain arithmetic over byte counts (no torch), so the decision is tested with made-up devices:
a worker with eight GPUs, or a 405B model, costs a test nothing.

- whole: the weights times MEMORY_HEADROOM fit the device with the most free memory. The fastest,
  and the tensors go from the hashing read straight onto that device.
- spread: with several devices, consecutive blocks fill each device in turn (each device's share
  times MEMORY_HEADROOM, plus the activations, within its free memory).
- streamed: one block at a time on the device with the most free memory: it needs the largest
  block plus the activations (two blocks when there is room, so the next one loads while one runs).
  `reread` says whether host memory is too small to hold the weights; when it is not, the smoke
  pass still reads local files again (from the page cache the hashing read left) and holds only
  objects from storage in host memory (verification.core.model_checks.sink_for).
"""

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from verification.core.sizes import format_bytes

WHOLE, SPREAD, STREAMED = "whole", "spread", "streamed"
# Room for activations, logits and the allocator beside the weights of a whole model.
MEMORY_HEADROOM = 1.25


class ModelTooLarge(Exception):
    """Not even one block and its activations fit; the message says what was needed and what to do."""


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # as torch names it: "cpu", "cuda:0"
    free: int | None  # bytes the smoke pass may take there; None when the platform cannot tell


@dataclass(frozen=True)
class Block:
    name: str  # the module's path in the model, "model.layers.3"
    nbytes: int  # its weights, tied ones included (a tied head brings the embedding again)


@dataclass(frozen=True)
class ModelBlocks:
    blocks: tuple[Block, ...]  # in the order the forward pass runs them
    activation_bytes: int  # what the forward pass needs beside one block's weights


@dataclass(frozen=True)
class Placement:
    kind: str  # WHOLE, SPREAD or STREAMED
    device: str  # where the forward pass starts (the only device for WHOLE and STREAMED)
    free: int | None  # what that device had, for the report
    block_devices: tuple[tuple[str, str], ...] = ()  # SPREAD: (block, device), in forward order
    reread: bool = False  # STREAMED: host memory cannot hold the weights, so each block is read again
    prefetch: bool = False  # STREAMED: room for two blocks, so the next one loads while one runs
    largest_block: Block | None = None


def place_model(
    weight_bytes: int,
    devices: Sequence[DeviceMemory],
    host_free: int | None,
    model_blocks: Callable[[], ModelBlocks],
) -> Placement:
    """Where the forward pass runs. `model_blocks` is only called when the whole model does not fit.

    `host_free` is what host memory may hold of the weights while they wait their turn (on a CPU
    worker, the same budget as the device). Raises ModelTooLarge when no placement fits.
    """
    best = max(devices, key=lambda memory: -1 if memory.free is None else memory.free)
    if best.free is None or weight_bytes * MEMORY_HEADROOM <= best.free:
        return Placement(WHOLE, best.device, best.free)
    layout = model_blocks()
    largest = max(layout.blocks, key=lambda block: block.nbytes)
    block_devices = spread_over(layout, devices)
    if block_devices is not None:
        named = tuple(zip((block.name for block in layout.blocks), block_devices, strict=True))
        return Placement(SPREAD, block_devices[0], best.free, block_devices=named, largest_block=largest)
    one_block = largest.nbytes + layout.activation_bytes
    if one_block > best.free:
        raise ModelTooLarge(
            f"the weights take {format_bytes(weight_bytes)} and even streamed block by block the largest block "
            f"({largest.name}, {format_bytes(largest.nbytes)}) and its activations need {format_bytes(one_block)}, "
            f"but {best.device} has {format_bytes(best.free)} free; run the smoke pass on a worker with a larger GPU "
            "(queue gpu), or raise WEIGHTGATE_SMOKE_MAX_BYTES"
        )
    return Placement(
        STREAMED,
        best.device,
        best.free,
        reread=host_free is None or weight_bytes * MEMORY_HEADROOM > host_free,
        prefetch=two_blocks_bytes(layout) + layout.activation_bytes <= best.free,
        largest_block=largest,
    )


def spread_over(layout: ModelBlocks, devices: Sequence[DeviceMemory]) -> tuple[str, ...] | None:
    """Each block's device when consecutive blocks fill the devices in order, or None when they don't fit.

    Filling in order is optimal for blocks that must stay in order, and it keeps the hops between
    devices to one per device.
    """
    known = [memory for memory in devices if memory.free is not None]
    if len(known) < 2:
        return None
    placed: list[str] = []
    index, taken = 0, 0
    for block in layout.blocks:
        while (taken + block.nbytes) * MEMORY_HEADROOM + layout.activation_bytes > known[index].free:
            index, taken = index + 1, 0
            if index == len(known):
                return None
        placed.append(known[index].device)
        taken += block.nbytes
    return tuple(placed) if index > 0 else None


def two_blocks_bytes(layout: ModelBlocks) -> int:
    """The most two consecutive blocks hold: what the device holds while one runs and the next loads."""
    sizes = [block.nbytes for block in layout.blocks]
    return max((a + b for a, b in itertools.pairwise(sizes)), default=sum(sizes))
