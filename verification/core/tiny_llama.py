"""Write a tiny LLaMA-architecture checkpoint with random weights, sharded like a real release.

Used by the demo and the tests: the tensor names, shapes, index and config follow the layout that
`transformers` writes for LlamaForCausalLM, at a size of a few megabytes. The tests also write
other architectures (Mistral, Qwen2, GPT-2) the same way, and cut shards as real releases are cut.
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tracing.synthetic import llama_shapes
from verification.core.layout import INDEX_NAME

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2048,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}


# One description of LLaMA's tensors, shared with the traceable copies' synthetic checkpoints.
llama_parameter_shapes = llama_shapes


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors a checkpoint of `config` holds: LLaMA's written out here, any other architecture's
    taken from transformers (built on the meta device), in the model's own order."""
    if config["model_type"] == "llama":
        return llama_parameter_shapes(config)
    from verification.core.model_checks import expected_parameters

    return {name: shape for name, (shape, _) in expected_parameters(config).items()}


def shard_groups(names: list[str], sizes: dict[str, int], shards: int, layout: str) -> list[list[str]]:
    """Which tensors go in which shard: "interleaved" deals them out in turn; "consecutive" cuts the
    model's order into runs of about equal bytes, as real checkpoints are cut, so a layer can span two."""
    if shards == 1:
        return [names]
    if layout == "interleaved":
        return [names[i::shards] for i in range(shards)]
    total, groups, filled = sum(sizes.values()), [[] for _ in range(shards)], 0
    for name in names:
        groups[min(filled * shards // total, shards - 1)].append(name)
        filled += sizes[name]
    return [group for group in groups if group]


def write_tiny_llama(
    directory: Path | str,
    *,
    shards: int = 2,
    seed: int = 0,
    config_overrides: dict | None = None,
    layout: str = "interleaved",
    shard_order_seed: int | None = None,
) -> Path:
    """Write config.json, `shards` safetensors files and their index into `directory`.

    `config_overrides` may name another architecture (`model_type`, `architectures`); `layout` says
    how tensors are cut into shards (see `shard_groups`), and `shard_order_seed` shuffles which file
    each run of tensors lands in, so file order says nothing of layer order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**TINY_LLAMA_CONFIG, **(config_overrides or {})}
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            weights = rng.standard_normal(shape, dtype=np.float32)
            weights *= 0.02  # in place: the same values, without two copies of a 1 GB test model
            tensors[name] = weights
    names = list(tensors)
    groups = shard_groups(names, {name: array.nbytes for name, array in tensors.items()}, shards, layout)
    if shard_order_seed is not None:
        np.random.default_rng(shard_order_seed).shuffle(groups)
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        filename = "model.safetensors" if len(groups) == 1 else f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        save_file({name: tensors[name] for name in group}, directory / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, filename))
    if len(groups) > 1:
        total = sum(array.nbytes for array in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return directory
