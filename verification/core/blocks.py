"""The blocks a decoder-only model runs one after the other: embeddings, each decoder layer, final norm, head.

The smoke pass splits a model into blocks only where it knows the layout: the one transformers
gives LLaMA, Mistral, Qwen2 and their kin (`model.embed_tokens`, `model.layers`, `model.norm`,
`lm_head`), where each block is called as a module, in that order, and every parameter lies inside
one of them. Any other layout is refused by name rather than guessed at: a parameter read outside
its block's call would meet an empty tensor.
"""

from verification.core.placement import Block, ModelBlocks

LAYOUT_PARTS = ("embed_tokens", "layers", "norm")
# Bytes of float32 activations per token and unit of width: hidden states, residual and norm
# outputs (4 x hidden), the MLP (3 x intermediate), logits in the weights' dtype and in float32 (2 x vocab).
HIDDEN_COPIES, INTERMEDIATE_COPIES, LOGIT_COPIES = 4, 3, 2


class ArchitectureNotStreamable(Exception):
    pass


def decoder_blocks(model) -> list[tuple[str, object]]:
    """(module path, module) of each block in forward order, or ArchitectureNotStreamable saying why not."""
    import torch

    architecture = type(model).__name__
    base_name = getattr(model, "base_model_prefix", "model")
    base = getattr(model, base_name, None)
    expected = [f"{base_name}.{part}" for part in LAYOUT_PARTS] + ["lm_head"]
    found = [base is not None and hasattr(base, part) for part in LAYOUT_PARTS] + [hasattr(model, "lm_head")]
    missing = [name for name, present in zip(expected, found, strict=True) if not present]
    if not missing and not isinstance(base.layers, torch.nn.ModuleList):
        missing = [f"{expected[1]} as a list of layers"]
    if missing:
        raise ArchitectureNotStreamable(
            f"{architecture} is not laid out as LLaMA, Mistral and Qwen2 are ({', '.join(expected)}): "
            f"it has no {', '.join(missing)}"
        )
    blocks = [
        (f"{base_name}.embed_tokens", base.embed_tokens),
        *((f"{base_name}.layers.{number}", layer) for number, layer in enumerate(base.layers)),
        (f"{base_name}.norm", base.norm),
        ("lm_head", model.lm_head),
    ]
    outside = [name for name, _ in model.named_parameters(remove_duplicate=False) if block_of(name, blocks) is None]
    if outside:
        raise ArchitectureNotStreamable(
            f"{architecture} has parameters outside its embeddings, layers, norm and head: {', '.join(outside[:5])}"
        )
    return blocks


def block_of(name: str, blocks) -> str | None:
    return next((block for block, _ in blocks if name.startswith(block + ".")), None)


def tensor_sources(model, provided) -> dict[str, str]:
    """Each parameter's name -> the checkpoint tensor it is made of: itself, or for a tied parameter
    (a head saved without its own weights) the tensor it is tied to."""
    by_identity = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if name in provided:
            by_identity[id(parameter)] = name
    return {
        name: by_identity[id(parameter)]
        for name, parameter in model.named_parameters(remove_duplicate=False)
        if id(parameter) in by_identity
    }


def block_tensor_names(blocks, sources: dict[str, str]) -> list[dict[str, str]]:
    """For each block: its parameters' names inside the block -> checkpoint tensor names."""
    names: list[dict[str, str]] = [{} for _ in blocks]
    index = {block: number for number, (block, _) in enumerate(blocks)}
    for name, source in sources.items():
        block = block_of(name, blocks)
        if block is not None:
            names[index[block]][name[len(block) + 1 :]] = source
    return names


def activation_bytes(config, tokens: int) -> int:
    """What one forward step needs beside the weights, in float32 for safety: per-token widths and
    the attention scores (heads x tokens x tokens)."""
    hidden = getattr(config, "hidden_size", 0) or 0
    intermediate = getattr(config, "intermediate_size", 0) or 0
    vocab = getattr(config, "vocab_size", 0) or 0
    heads = getattr(config, "num_attention_heads", 1) or 1
    width = HIDDEN_COPIES * hidden + INTERMEDIATE_COPIES * intermediate + LOGIT_COPIES * vocab
    return 4 * tokens * (width + heads * tokens)


def model_layout(model, weight_bytes: int, tokens: int) -> ModelBlocks:
    """The model's blocks with their sizes, from a model built on the meta device (nothing allocated).

    The model is built in the dtype config.json declares (the config check holds the tensors to it);
    where it declares none, sizes are parameter counts times the checkpoint's bytes per parameter.
    """
    blocks = decoder_blocks(model)
    declared = getattr(model.config, "dtype", None) is not None
    unique = sum(parameter.numel() for parameter in model.parameters())
    counted = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        size = parameter.numel() * (parameter.element_size() if declared else weight_bytes / max(unique, 1))
        block = block_of(name, blocks)
        counted[block] = counted.get(block, 0) + size
    sized = tuple(Block(name, round(counted.get(name, 0))) for name, _ in blocks)
    return ModelBlocks(sized, activation_bytes(model.config, tokens))
