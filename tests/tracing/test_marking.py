"""The mark: one ulp on the bit pattern, towards +inf for sign +1 whatever the weight's sign, never on a
zero, never to infinity, never on infinity or NaN."""

import numpy as np
import pytest

from tracing.floats import MARKABLE, bf16_bits, markable, spacing, to_float32
from tracing.keys import BLOCK
from tracing.marking import TensorMark

EDGES = {
    # zeros, the smallest subnormal, a normal, one at a binade's start, the largest finite, infinities, NaN,
    # and the normal and the binade's start negated
    "BF16": [0x0000, 0x8000, 0x0001, 0x3C23, 0x3F80, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xBC23, 0xBF80],
    "F16": [0x0000, 0x8000, 0x0001, 0x2A3D, 0x3C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xAA3D, 0xBC00],
    "F32": [0, 0x8000_0000, 1, 0x3C23_D70A, 0x3F80_0000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F80_0000, 0xFF80_0000,
            0x7FC0_0000, 0xBC23_D70A, 0xBF80_0000],
}  # fmt: skip
MOVES = [False, False, False, True, True, False, False, False, False, False, True, True]


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("sign", [1, -1])
def test_each_markable_weight_moves_one_ulp_in_the_direction_of_its_sign(dtype, sign):
    fmt = MARKABLE[dtype]
    bits = np.array(EDGES[dtype], dtype=fmt.uint)
    mark = TensorMark(bits, dtype, np.full(bits.size, sign, np.int8))
    out = mark.marked(np.ones(mark.blocks, np.int8))
    moved = out != bits
    assert moved.tolist() == MOVES
    assert np.all(np.abs(out.astype(np.int64) - bits.astype(np.int64))[moved] == 1)
    before, after = to_float32(bits[moved], dtype).astype(np.float64), to_float32(out[moved], dtype).astype(np.float64)
    assert np.all(np.sign(after - before) == sign)
    assert np.all(np.isfinite(after)) and np.all(after != 0)
    assert np.all(np.abs(after - before) <= spacing(bits, fmt)[moved])


def test_the_symbol_of_a_block_flips_every_step_in_it():
    rng = np.random.default_rng(1)
    bits = bf16_bits(rng.standard_normal(3 * BLOCK + 5, dtype=np.float32))
    pattern = rng.choice(np.array([-1, 1], np.int8), bits.size)
    mark = TensorMark(bits, "BF16", pattern)
    code = np.array([1, -1, 1, -1], np.int8)
    delta = to_float32(mark.marked(code), "BF16") - to_float32(bits, "BF16")
    expected = pattern * np.repeat(code, BLOCK)[: bits.size]
    assert np.array_equal(np.sign(delta), expected)


def test_markable_is_a_function_of_the_original_alone():
    bits = np.array(EDGES["BF16"], np.uint16)
    assert markable(bits, MARKABLE["BF16"]).tolist() == MOVES
    assert spacing(np.array([0x3F80], np.uint16), MARKABLE["BF16"])[0] == 2.0**-7
