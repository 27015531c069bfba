"""The mark on one carrier tensor: every markable weight moves one ulp up or down, by a step of one on
its bit pattern, the direction keyed per recipient (see tracing.keys).

The step is in value terms: sign +1 moves the weight towards +infinity whatever its own sign (the
magnitude grows for a positive weight and shrinks for a negative one), so a leak's residual has the
sign of the mark everywhere and tracing needs no other sign. Zeros, the smallest subnormal, the largest
finite magnitude, infinities and NaNs are left alone: no step makes or moves a zero, or makes an infinity.
"""

import numpy as np

from tracing.floats import MARKABLE, markable
from tracing.keys import BLOCK, CopyKeys


def blocks_of(count: int) -> int:
    return (count + BLOCK - 1) // BLOCK


class TensorMark:
    """What every recipient's copy of one carrier tensor shares: the original bits and, folded into one
    int8 step per weight (+1, -1 or 0 on the bit pattern), the keyed chips, each weight's direction and
    whether it can move. A recipient then costs one multiply and one add per weight."""

    def __init__(self, bits: np.ndarray, dtype: str, pattern: np.ndarray):
        self.format = MARKABLE[dtype]
        self.bits = np.ascontiguousarray(bits).reshape(-1).view(self.format.uint)
        negative = (self.bits & self.format.uint(self.format.sign_bit)) != 0
        step = np.where(negative, -pattern, pattern).astype(np.int8)
        step[~markable(self.bits, self.format)] = 0
        self.step = step
        self.blocks = blocks_of(len(self.bits))

    def marked(self, code: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The bits of a copy whose per-block symbols are `code` (int8 ±1, one per block), written into
        `out` (flat, of the bits' dtype) when given."""
        if out is None:
            out = self.bits.copy()
        else:
            out[:] = self.bits
        signed = out.view(self.format.sint)
        whole = len(out) // BLOCK * BLOCK
        delta = self.step[:whole].reshape(-1, BLOCK) * code[: whole // BLOCK, None]
        signed[:whole] += delta.reshape(-1)
        if whole < len(out):
            signed[whole:] += self.step[whole:] * code[-1]
        return out


def mark_tensor(keys: CopyKeys, file: str, name: str, dtype: str, bits: np.ndarray, recipient: str) -> np.ndarray:
    """One tensor of a recipient's copy (flat bits), made from scratch; `served` keeps TensorMarks instead."""
    mark = TensorMark(bits, dtype, keys.pattern(file, name, bits.size))
    return mark.marked(keys.code(file, name, recipient, mark.blocks))
