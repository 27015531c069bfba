"""What leakers do to a copy, simulated for the tests and the bench (the threats of the issue), and the
writers for the containers leaks come in. Tensors are float32 arrays in transformers' orientation.

GGUF files are made as llama.cpp's converter makes them, with the gguf package's own quantizers and
llama.cpp's tensor names; the converter's permutation of q_proj and k_proj rows is left out (those are
never carriers).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tracing.floats import bf16_bits, to_bf16
from tracing.safetensors_file import write_tensors

GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GGUF_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(name: str) -> str:
    """llama.cpp's name for a LLaMA tensor transformers names `name`."""
    stem, suffix = name.rsplit(".", 1)
    if stem in GGUF_NAMES:
        return f"{GGUF_NAMES[stem]}.{suffix}"
    _, _, layer, role = stem.split(".", 3)  # model.layers.N.role
    return f"blk.{layer}.{GGUF_LAYER_NAMES[role]}.{suffix}"


def in_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """The values a copy converted to `dtype` holds."""
    if dtype == "BF16":
        return to_bf16(values)
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float32)
    return values.astype(np.float32)


def int8_rows(values: np.ndarray) -> np.ndarray:
    """Symmetric int8 rounding with one scale per row (LLM.int8's vector-wise quantization), dequantized."""
    scale = np.abs(values).max(axis=-1, keepdims=True) / 127
    scale[scale == 0] = 1
    return (np.round(values / scale) * scale).astype(np.float32)


def int4_groups(values: np.ndarray, group: int = 128) -> np.ndarray:
    """Asymmetric 4-bit rounding (16 levels between a group's min and max, as GPTQ and AWQ store them) in
    groups of `group` along each row, dequantized; a row's last group may be shorter."""
    rows, columns = values.shape
    padded = np.pad(values, ((0, 0), (0, -columns % group)), mode="edge").reshape(rows, -1, group)
    low, high = padded.min(axis=-1, keepdims=True), padded.max(axis=-1, keepdims=True)
    scale = (high - low) / 15
    scale[scale == 0] = 1
    levels = np.clip(np.round((padded - low) / scale), 0, 15)
    return (levels * scale + low).reshape(rows, -1)[:, :columns].astype(np.float32)


def noise(values: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on every weight: a stand-in for light fine-tuning."""
    return (values + rng.standard_normal(values.shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def average(copies: Sequence[np.ndarray]) -> np.ndarray:
    """Colluders averaging their copies."""
    return np.mean(np.stack(copies), axis=0, dtype=np.float32)


def restore_differences(copies: Sequence[np.ndarray]) -> np.ndarray:
    """Colluders putting back, wherever their copies differ, the middle of the values they see (the
    original, when they see one ulp either side of it); where all agree the mark stays."""
    stacked = np.stack(copies)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    return np.where(low == high, low, (low + high) / 2).astype(np.float32)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], dtype: str = "BF16") -> None:
    """A leak saved by transformers in `dtype` (BF16, F16 or F32)."""
    if dtype == "BF16":
        encoded = {name: ("BF16", bf16_bits(values)) for name, values in tensors.items()}
    else:
        numpy_dtype = {"F16": np.float16, "F32": np.float32}[dtype]
        encoded = {name: (dtype, values.astype(numpy_dtype)) for name, values in tensors.items()}
    write_tensors(Path(path), encoded)


def write_gguf(path: Path, tensors: Mapping[str, np.ndarray], quantization: str) -> None:
    """A GGUF file as llama.cpp's converter writes one: matrices in `quantization` (F32, F16, Q8_0, Q4_0)
    where their rows divide into its blocks, vectors in F32."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    kind = GGMLQuantizationType[quantization]
    writer = GGUFWriter(Path(path), arch="llama")
    for name, values in tensors.items():
        if values.ndim == 2 and kind in (GGMLQuantizationType.F16, GGMLQuantizationType.F32):
            writer.add_tensor(gguf_name(name), quantize(values, kind))
        elif values.ndim == 2 and values.shape[-1] % 32 == 0:
            writer.add_tensor(gguf_name(name), quantize(values, kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name(name), values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
