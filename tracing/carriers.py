"""Which tensors carry the mark: a function of the checkpoint's tensor names, dtypes, shapes and files
alone, so publishing and tracing find the same ones.

Candidates are the `down_proj`, `v_proj` and `o_proj` weights of the middle layers, named as
transformers names LLaMA, Mistral, Qwen2 and their kin (`model.layers.N.self_attn.v_proj.weight`,
any prefix before `layers.`), in bf16, fp16 or fp32. Left out, and why:
  - embeddings and lm_head: vocabularies get resized or tied, and they act on the logits directly;
  - norms and biases: few values, and AWQ-style scaling or rotations fold them into their neighbours;
  - q_proj and k_proj: llama.cpp's converter permutes their rows;
  - the first and last layers (two at each end from 8 layers on, one below that): the most sensitive
    to change, and the ones quantization recipes keep at higher precision or treat apart.
Chosen, file by file so that every shard holding a candidate can name its recipient on its own: whole
tensors (a served file puts them last), from the middle layer of the model outward, down, v, then o
in each layer, each one that still fits both of the file's budgets: MAX_FRACTION of the file's
weights (the mark's effect on the logits grows with it) and MAX_WEIGHTS weights (32 MiB of bf16: the
tail each recipient's copy of the file costs to make, hash and store). down_proj comes first because
its mark moved the bench model's logits least per weight (bench/results/trace.md); v_proj and down_proj
are also what llama.cpp's Q4_K_M keeps at 6 bits in half the layers. A score grows with the square root
of the carriers' count, so 2^24 per file is far more than tracing needs; fewer than MIN_WEIGHTS in all
is refused as too few.
"""

import re
from collections.abc import Mapping

from tracing.floats import MARKABLE

ROLES = ("mlp.down_proj", "self_attn.v_proj", "self_attn.o_proj")
# llama.cpp's names for the same tensors (convert_hf_to_gguf.py, gguf's tensor_mapping.py).
GGUF_ROLES = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_down": "mlp.down_proj"}
MAX_FRACTION = 0.07
MAX_WEIGHTS = 2**24
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
    files: Mapping[str, str] | None = None,
    *,
    max_fraction: float = MAX_FRACTION,
    max_weights: int = MAX_WEIGHTS,
    min_weights: int = MIN_WEIGHTS,
) -> list[str]:
    """The carrier tensors of a checkpoint, sorted by name: `tensors` maps every tensor's name to its
    (dtype, shape), `files` its name to the file that holds it (None: all in one file).

    Raises NoCarriersError when none can carry or the chosen ones hold fewer than `min_weights` weights.
    """
    files = files if files is not None else dict.fromkeys(tensors, "")
    in_file = {}
    for name, (_, shape) in tensors.items():
        in_file[files[name]] = in_file.get(files[name], 0) + numel(shape)
    budgets = {file: min(max_fraction * count, max_weights) for file, count in in_file.items()}
    found = candidates(tensors)
    chosen, used = [], dict.fromkeys(in_file, 0)
    for name in found:
        file, count = files[name], numel(tensors[name][1])
        if used[file] + count <= budgets[file]:
            chosen.append(name)
            used[file] += count
    if not found:
        raise NoCarriersError(
            "no tensor of this checkpoint can carry a mark: traceable copies need the v_proj, o_proj or "
            "down_proj weights (bf16, fp16 or fp32) of layers other than the first and last, named as "
            "transformers names LLaMA, Mistral or Qwen2 (model.layers.N.self_attn.v_proj.weight)"
        )
    if sum(used.values()) < min_weights:
        raise NoCarriersError(
            f"the carriers that fit the budget (per file {max_fraction:.0%} of its weights, at most "
            f"{max_weights:,}) hold {sum(used.values()):,} weights, fewer than the {min_weights:,} a leak needs "
            "to be traced"
        )
    return sorted(chosen)
