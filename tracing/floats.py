"""The bit patterns of the float formats a mark can go on (bf16, fp16, fp32) and of those a leak may
come in, read as float32.

A mark steps a weight's bit pattern by one: with the sign bit apart, the patterns of a format's finite
values are its magnitudes in order, so +1 on the magnitude is the next larger magnitude, one ulp away.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FloatFormat:
    name: str
    uint: type  # the unsigned integer of the same width, to see the bits
    sint: type  # the signed one, to add a step in place
    sign_bit: int
    max_finite: int  # the largest finite magnitude's bit pattern: one more is infinity


MARKABLE = {
    "BF16": FloatFormat("BF16", np.uint16, np.int16, 0x8000, 0x7F7F),
    "F16": FloatFormat("F16", np.uint16, np.int16, 0x8000, 0x7BFF),
    "F32": FloatFormat("F32", np.uint32, np.int32, 0x8000_0000, 0x7F7F_FFFF),
}
ITEM_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def e4m3_table() -> np.ndarray:
    """The 256 values of float8 e4m3fn (bias 7, no infinity, NaN at S.1111.111)."""
    codes = np.arange(256)
    exponent, mantissa = (codes >> 3) & 0xF, (codes & 7).astype(np.float32)
    magnitude = np.where(exponent == 0, mantissa / 8 * 2.0**-6, (1 + mantissa / 8) * 2.0 ** (exponent - 7.0))
    magnitude[(codes & 0x7F) == 0x7F] = np.nan
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.float32)


E4M3 = e4m3_table()


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Values of `raw` (its bits, in any integer or float view of the right width) as float32."""
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    if dtype == "F32":
        return raw.view(np.float32)
    if dtype == "F64":
        return raw.view(np.float64).astype(np.float32)
    if dtype == "F8_E5M2":  # the top byte of an fp16
        return (raw.view(np.uint8).astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    if dtype == "F8_E4M3":
        return E4M3[raw.view(np.uint8)]
    raise ValueError(f"{dtype} is not a float format this library reads")


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bf16 (ties to even), as bits; NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bf16 and back: what saving in bf16 keeps."""
    return to_float32(bf16_bits(values), "BF16")


def markable(bits: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Where a one-ulp step either way stays a finite nonzero number: not zero or the smallest subnormal
    (one down would be minus zero or zero), not the largest finite magnitude (one up is infinity), not
    infinity or NaN. A function of the original alone, so tracing finds the same places."""
    magnitude = bits & fmt.uint(fmt.sign_bit - 1)
    return (magnitude > 1) & (magnitude < fmt.max_finite)


def spacing(bits: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The ulp of each weight: the distance from its magnitude to the next larger one (0 where not markable)."""
    magnitude = bits & fmt.uint(fmt.sign_bit - 1)
    step = np.minimum(magnitude, fmt.uint(fmt.max_finite - 1))
    ulp = to_float32(step + fmt.uint(1), fmt.name) - to_float32(step, fmt.name)
    return np.where(markable(bits, fmt), ulp, np.float32(0))
