"""A random LLaMA-shaped checkpoint in bf16, sharded as transformers shards one, for the tests and
the bench: config.json, the shards and their index."""

import json
from pathlib import Path

import numpy as np

from tracing.floats import bf16_bits
from tracing.safetensors_file import write_tensors

INDEX_NAME = "model.safetensors.index.json"


def llama_config(hidden=512, intermediate=1376, layers=4, heads=8, kv_heads=8, vocab=8000) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors of a LlamaForCausalLM of `config`, in transformers' order (no lm_head when tied)."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.self_attn.q_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.v_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.o_proj.weight": (hidden, hidden),
            f"{prefix}.mlp.gate_proj.weight": (inter, hidden),
            f"{prefix}.mlp.up_proj.weight": (inter, hidden),
            f"{prefix}.mlp.down_proj.weight": (hidden, inter),
            f"{prefix}.input_layernorm.weight": (hidden,),
            f"{prefix}.post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def random_weights(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights as a model is trained in: normal with std 0.02, norms at one."""
    rng = np.random.default_rng(seed)
    return {
        name: np.ones(shape, np.float32) if len(shape) == 1 else rng.standard_normal(shape, np.float32) * 0.02
        for name, shape in llama_shapes(config).items()
    }


def write_checkpoint(directory: Path, config: dict, weights: dict[str, np.ndarray], shards: int = 2) -> list[str]:
    """The weights rounded to bf16, cut in model order into `shards` files of about equal size; returns
    the files' names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(weights)
    total, filled, groups = sum(w.size for w in weights.values()), 0, [[] for _ in range(shards)]
    for name in names:
        groups[min(filled * shards // total, shards - 1)].append(name)
        filled += weights[name].size
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for file, group in zip(files, groups, strict=True):
        write_tensors(directory / file, {name: ("BF16", bf16_bits(weights[name])) for name in group})
        weight_map |= dict.fromkeys(group, file)
    index = {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return files
