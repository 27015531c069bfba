"""Which tensors carry the mark: a function of the checkpoint's tensor names, dtypes and shapes alone,
so publishing and tracing find the same ones.

Candidates are the `v_proj`, `o_proj` and `down_proj` weights of the middle layers, named as
transformers names LLaMA, Mistral, Qwen2 and their kin (`model.layers.N.self_attn.v_proj.weight`,
any prefix before `layers.`), in bf16, fp16 or fp32. Left out, and why:
  - embeddings and lm_head: vocabularies get resized or tied, and they act on the logits directly;
  - norms and biases: few values, and AWQ-style scaling or rotations fold them into their neighbours;
  - q_proj and k_proj: llama.cpp's converter permutes their rows;
  - the first and last layers (two at each end from 8 layers on, one below that): the most sensitive
    to change, and the ones quantization recipes keep at higher precision or treat apart.
Chosen: whole tensors (a served file puts them last), from the middle layer outward, v, o, then down
in each layer, each one that still fits within both budgets: MAX_FRACTION of the checkpoint's weights
(the mark's effect on the logits grows with it) and MAX_WEIGHTS weights (64 MiB of bf16: the tail every
recipient's copy costs to make, hash and store). A score grows with the square root of the carriers'
count, so 2^25 is far more than tracing needs; fewer than MIN_WEIGHTS is refused as too few.
"""

import re
from collections.abc import Mapping

from tracing.floats import MARKABLE

ROLES = ("self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj")
# llama.cpp's names for the same tensors (convert_hf_to_gguf.py, gguf's tensor_mapping.py).
GGUF_ROLES = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_down": "mlp.down_proj"}
MAX_FRACTION = 0.05
MAX_WEIGHTS = 2**25
MIN_WEIGHTS = 2**16

HF_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn\.v_proj|self_attn\.o_proj|mlp\.down_proj)\.weight$")
GGUF_NAME = re.compile(r"^blk\.(\d+)\.(attn_v|attn_output|ffn_down)\.weight$")
LAYER = re.compile(r"(?:^|\.)(?:layers|blk)\.(\d+)\.")


class NoCarriersError(ValueError):
    """The checkpoint cannot be made traceable: the message says what a carrier is."""


def carrier_slot(name: str) -> tuple[int, str] | None:
    """(layer, role) of a candidate tensor, whether named by transformers or by llama.cpp; None otherwise."""
    if match := HF_NAME.search(name):
        return int(match[1]), match[2]
    if match := GGUF_NAME.match(name):
        return int(match[1]), GGUF_ROLES[match[2]]
    return None


def numel(shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def middle_layers(layers: int) -> list[int]:
    """The layers that may carry, the middle one first and then outward."""
    edge = 2 if layers >= 8 else 1
    return sorted(range(edge, layers - edge), key=lambda layer: (abs(2 * layer - (layers - 1)), layer))


def candidates(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """Candidate names in the order they are chosen (see the module's docstring)."""
    by_slot = {}
    for name, (dtype, shape) in tensors.items():
        slot = carrier_slot(name)
        if slot is not None and dtype in MARKABLE and len(shape) == 2:
            by_slot[slot] = name
    layers = 1 + max((int(match[1]) for name in tensors if (match := LAYER.search(name))), default=-1)
    return [by_slot[(layer, role)] for layer in middle_layers(layers) for role in ROLES if (layer, role) in by_slot]


def select_carriers(
    tensors: Mapping[str, tuple[str, tuple[int, ...]]],
    *,
    max_fraction: float = MAX_FRACTION,
    max_weights: int = MAX_WEIGHTS,
    min_weights: int = MIN_WEIGHTS,
) -> list[str]:
    """The carrier tensors of a checkpoint whose tensors are `tensors` (name -> (dtype, shape)), sorted by name.

    Raises NoCarriersError when none can carry or the chosen ones hold fewer than `min_weights` weights.
    """
    budget = min(max_fraction * sum(numel(shape) for _, shape in tensors.values()), max_weights)
    chosen, used = [], 0
    found = candidates(tensors)
    for name in found:
        count = numel(tensors[name][1])
        if used + count <= budget:
            chosen.append(name)
            used += count
    if not found:
        raise NoCarriersError(
            "no tensor of this checkpoint can carry a mark: traceable copies need the v_proj, o_proj or "
            "down_proj weights (bf16, fp16 or fp32) of layers other than the first and last, named as "
            "transformers names LLaMA, Mistral or Qwen2 (model.layers.N.self_attn.v_proj.weight)"
        )
    if used < min_weights:
        raise NoCarriersError(
            f"the carriers that fit the budget ({budget:,.0f} weights: {max_fraction:.0%} of the checkpoint, at "
            f"most {max_weights:,}) hold {used:,} weights, fewer than the {min_weights:,} a leak needs to be traced"
        )
    return sorted(chosen)
