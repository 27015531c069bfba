"""Per-tensor statistics computed while the bytes stream past, in bounded memory.

The scanner is fed the data area of a safetensors file in order, chunk by chunk (the same chunks
that are being hashed), and keeps only running sums per tensor. NaN and Inf are counted exactly;
the absolute maximum is exact; mean and std are exact for tensors up to a million elements and
taken over a fixed sixteenth above that (the first 65,536 elements of every 1,048,576: contiguous
runs keep the sampling cheap), which is enough to compare one revision with the next.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from verification.core.safetensors_format import SafetensorsHeader, TensorEntry

SAMPLE_ABOVE_ELEMENTS = 1 << 20
SAMPLE_STRIDE = 16
SAMPLE_PERIOD = 1 << 20  # elements; the first PERIOD // STRIDE of each period are sampled


def sampled(values: np.ndarray, first_index: int, stride: int) -> list[np.ndarray]:
    """The parts of `values` (elements first_index...) that fall in the sample; all of it at stride 1."""
    if stride == 1:
        return [values]
    block = SAMPLE_PERIOD // stride
    end = first_index + len(values)
    parts = []
    for period in range(first_index - first_index % SAMPLE_PERIOD, end, SAMPLE_PERIOD):
        low, high = max(period, first_index), min(period + block, end)
        if low < high:
            parts.append(values[low - first_index : high - first_index])
    return parts


def _f8_e4m3_table() -> np.ndarray:
    """float32 values of all 256 F8_E4M3 (FN) codes: no infinities, S.1111.111 is NaN."""
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0xF
    mantissa = codes & 0x7
    normal = (1 + mantissa / 8) * np.exp2(exponent.astype(np.float64) - 7)
    subnormal = (mantissa / 8) * 2.0**-6
    values = sign * np.where(exponent == 0, subnormal, normal)
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values.astype(np.float32)


def _f8_e5m2_table() -> np.ndarray:
    """float32 values of all 256 F8_E5M2 codes: the top byte of an IEEE half."""
    return (np.arange(256, dtype=np.uint16) << 8).view(np.float16).astype(np.float32)


@dataclass(frozen=True)
class SignMagnitude:
    """A float format whose bits order like its magnitude: NaN/Inf and |max| come from integer reductions."""

    unsigned: type
    signed: type
    sign_bit: int
    inf_bits: int | None  # magnitude bits of infinity; None when the format has none
    nan_above: int  # magnitudes above this are NaN (at or above when there is no infinity)
    to_float32: object  # unsigned codes -> float32 values


BF16 = SignMagnitude(
    np.uint16,
    np.int16,
    0x8000,
    0x7F80,
    0x7F80,
    lambda codes: np.left_shift(codes, 16, dtype=np.uint32).view(np.float32),
)
F16 = SignMagnitude(
    np.uint16, np.int16, 0x8000, 0x7C00, 0x7C00, lambda codes: codes.view(np.float16).astype(np.float32)
)
_E4M3, _E5M2 = _f8_e4m3_table(), _f8_e5m2_table()
F8_E4M3 = SignMagnitude(np.uint8, np.int8, 0x80, None, 0x7E, lambda codes: _E4M3[codes])
F8_E5M2 = SignMagnitude(np.uint8, np.int8, 0x80, 0x7C, 0x7C, lambda codes: _E5M2[codes])
SIGN_MAGNITUDE = {"BF16": BF16, "F16": F16, "F8_E4M3": F8_E4M3, "F8_E5M2": F8_E5M2}
IEEE = {"F32": np.float32, "F64": np.float64, "C64": np.float32}
INTEGERS = {
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "U16": np.uint16,
    "I32": np.int32,
    "U32": np.uint32,
    "I64": np.int64,
    "U64": np.uint64,
}
ITEM_BYTES = {
    **{k: np.dtype(v).itemsize for k, v in INTEGERS.items()},
    "BF16": 2,
    "F16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F32": 4,
    "F64": 8,
    "C64": 8,
}


@dataclass
class TensorStats:
    name: str
    dtype: str
    numel: int
    nan: int = 0
    inf: int = 0
    absmax: float | None = None
    mean: float | None = None
    std: float | None = None
    sample_stride: int = 1
    scanned: bool = True
    # running sums, not reported (nor kept when a scan is stored)
    _count: int = field(default=0, repr=False, compare=False)
    _sum: float = field(default=0.0, repr=False, compare=False)
    _sumsq: float = field(default=0.0, repr=False, compare=False)
    _max_magnitude: float = field(default=0.0, repr=False, compare=False)

    @property
    def all_zero(self) -> bool:
        return self.scanned and self.numel > 0 and self.absmax == 0.0 and not self.nan

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "numel": self.numel,
            "nan": self.nan,
            "inf": self.inf,
            "absmax": self.absmax,
            "mean": self.mean,
            "std": self.std,
            "sample_stride": self.sample_stride,
            "scanned": self.scanned,
        }

    def add_finite(self, values: np.ndarray) -> None:
        """Accumulate finite values into the sums for mean and std (sums per chunk, totals in float64)."""
        if values.size:
            self._count += values.size
            self._sum += float(values.sum())  # pairwise in float32: accurate enough per chunk
            self._sumsq += float(np.dot(values, values))

    def finish(self) -> None:
        if not self.scanned:
            return
        self.absmax = float(self._max_magnitude) if self.numel else None
        if self._count:
            self.mean = self._sum / self._count
            variance = max(self._sumsq / self._count - self.mean * self.mean, 0.0)
            self.std = math.sqrt(variance)


@np.errstate(over="ignore", invalid="ignore")  # overflow and NaN are expected here, and handled
def _scan_ieee(stats: TensorStats, values: np.ndarray) -> None:
    total = float(values.sum())
    squares = float(np.dot(values, values))
    if math.isfinite(total) and math.isfinite(squares):
        finite = values
    else:  # rare: count exactly, and keep only finite values for the sums
        nan = np.isnan(values)
        inf = np.isinf(values)
        stats.nan += int(nan.sum())
        stats.inf += int(inf.sum())
        finite = values[~(nan | inf)]
        if not finite.size:
            return
        total, squares = float(finite.sum(dtype=np.float64)), float(np.dot(finite, finite))
        if not math.isfinite(squares):  # huge but finite values overflow float32 squares
            squares = float(np.dot(finite.astype(np.float64), finite.astype(np.float64)))
    stats._max_magnitude = max(stats._max_magnitude, float(finite.max()), -float(finite.min()))
    stats._count += finite.size
    stats._sum += total
    stats._sumsq += squares


def _scan_sign_magnitude(stats: TensorStats, codes: np.ndarray, fmt: SignMagnitude, first_index: int) -> None:
    signed = codes.view(fmt.signed)
    positive_max = int(signed.max())
    unsigned_max = int(codes.max())
    magnitude = max(
        positive_max if positive_max > 0 else 0, unsigned_max - fmt.sign_bit if unsigned_max >= fmt.sign_bit else 0
    )
    nonfinite_from = fmt.inf_bits if fmt.inf_bits is not None else fmt.nan_above
    magnitude_was_finite = magnitude < nonfinite_from
    if not magnitude_was_finite:
        magnitudes = codes & (fmt.sign_bit - 1)
        if fmt.inf_bits is not None:
            stats.inf += int((magnitudes == fmt.inf_bits).sum())
            stats.nan += int((magnitudes > fmt.nan_above).sum())
        else:
            stats.nan += int((magnitudes >= fmt.nan_above).sum())
        finite_codes = codes[magnitudes < nonfinite_from]
        magnitude = int((finite_codes & (fmt.sign_bit - 1)).max()) if finite_codes.size else 0
    if magnitude:
        stats._max_magnitude = max(stats._max_magnitude, float(fmt.to_float32(np.array([magnitude], codes.dtype))[0]))
    for part in sampled(codes, first_index, stats.sample_stride):
        sample = fmt.to_float32(part)
        stats.add_finite(sample if magnitude_was_finite else sample[np.isfinite(sample)])


def _scan_e8m0(stats: TensorStats, codes: np.ndarray, first_index: int) -> None:
    """F8_E8M0 is a power of two 2**(code-127); 0xFF is NaN; there is no zero and no sign."""
    nan = codes == 0xFF
    stats.nan += int(nan.sum())
    finite = codes[~nan]
    if finite.size:
        stats._max_magnitude = max(stats._max_magnitude, math.ldexp(1.0, int(finite.max()) - 127))
    for part in sampled(codes, first_index, stats.sample_stride):
        exponents = part[part != 0xFF].astype(np.int32)
        stats.add_finite(np.ldexp(np.float64(1.0), exponents - 127))


def _scan_integers(stats: TensorStats, values: np.ndarray, first_index: int) -> None:
    stats._max_magnitude = max(stats._max_magnitude, abs(float(values.max())), abs(float(values.min())))
    for part in sampled(values, first_index, stats.sample_stride):
        stats.add_finite(part.astype(np.float64))


class TensorScanner:
    """Feed it the data area of one safetensors file in order; read `stats` when done."""

    def __init__(self, header: SafetensorsHeader, sink=None):
        self.sink = sink  # optional: receives every tensor's bytes as they pass (see verification.core.loading)
        if sink is not None:
            sink.begin(header)
        self.entries: list[TensorEntry] = [e for e in header.by_offset() if e.nbytes]
        self.stats = {
            e.name: TensorStats(e.name, e.dtype, e.numel, scanned=e.dtype in ITEM_BYTES) for e in header.by_offset()
        }
        for stats in self.stats.values():
            stats.sample_stride = SAMPLE_STRIDE if stats.numel > SAMPLE_ABOVE_ELEMENTS and stats.dtype != "F32" else 1
        self.position = 0  # bytes of the data area consumed so far
        self.current = 0  # index into entries
        self.carry = b""  # bytes of an element split between two chunks

    def feed(self, chunk: memoryview) -> None:
        offset = 0
        while offset < len(chunk) and self.current < len(self.entries):
            entry = self.entries[self.current]
            take = min(entry.end - self.position, len(chunk) - offset)
            piece = chunk[offset : offset + take]
            if self.sink is not None:
                self.sink.write(entry.name, self.position - entry.start, piece)
            self._consume(entry, piece)
            offset += take
            self.position += take
            if self.position == entry.end:
                self.current += 1
                self.carry = b""

    def _consume(self, entry: TensorEntry, piece: memoryview) -> None:
        stats = self.stats[entry.name]
        size = ITEM_BYTES.get(entry.dtype)
        if size is None:
            return
        first_index = (self.position - entry.start - len(self.carry)) // size
        if self.carry:
            needed = size - len(self.carry)
            joined = self.carry + bytes(piece[:needed])
            piece = piece[needed:]
            if len(joined) < size:
                self.carry = joined
                return
            self.carry = b""
            self._scan(stats, entry.dtype, joined, first_index)
            first_index += 1
        whole = len(piece) - len(piece) % size
        if whole:
            self._scan(stats, entry.dtype, piece[:whole], first_index)
        self.carry = bytes(piece[whole:])

    @staticmethod
    def _scan(stats: TensorStats, dtype: str, data, first_index: int) -> None:
        if dtype in IEEE:
            _scan_ieee(stats, np.frombuffer(data, dtype=IEEE[dtype]))
        elif dtype in SIGN_MAGNITUDE:
            fmt = SIGN_MAGNITUDE[dtype]
            _scan_sign_magnitude(stats, np.frombuffer(data, dtype=fmt.unsigned), fmt, first_index)
        elif dtype == "F8_E8M0":
            _scan_e8m0(stats, np.frombuffer(data, dtype=np.uint8), first_index)
        else:
            _scan_integers(stats, np.frombuffer(data, dtype=INTEGERS[dtype]), first_index)

    def finish(self) -> list[TensorStats]:
        for stats in self.stats.values():
            stats.finish()
        return list(self.stats.values())
