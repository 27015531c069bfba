"""Tracing a leak: the residual on the carriers, a score for every recipient, and the verdict.

Each carrier weight's residual r_i = W_leak - W_original is weighted by g_i = ulp_i * pattern_i (zero
where no mark goes) and summed over its block: R_b = sum g_i r_i. A recipient u whose symbols are c_u
scores t_u = sum_b c_u,b R_b / sqrt(sum_b R_b^2). For anyone whose copy the leak was not made from, c_u
is a row of fair coins independent of R (each recipient's stream has its own key), so by Hoeffding
P(t_u >= 8) <= exp(-32) ~ 1.3e-14 whatever the leaker did: ~1.3e-10 across 10,000 recipients. The
leaker's symbols line up with every block's shift, so the score grows with the square root of the
number of blocks (of weights, when each block's noise outweighs its mark).
"""

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tracing.carriers import select_carriers
from tracing.errors import TracingInputError
from tracing.floats import MARKABLE, spacing, to_float32
from tracing.keys import BLOCK, CopyKeys
from tracing.leaks import leak_files, read_leak
from tracing.marking import blocks_of
from tracing.safetensors_file import read_header, read_raw

DEFAULT_THRESHOLD = 8.0


@dataclass(frozen=True)
class Carrier:
    file: str  # the path in the repo of the verified file that holds it
    name: str
    dtype: str
    shape: tuple[int, ...]
    bits: np.ndarray = field(repr=False, compare=False)  # flat, the format's unsigned integers

    @property
    def blocks(self) -> int:
        return blocks_of(self.bits.size)


def choose_carriers(files: Mapping[str, Path], **budget) -> list[str]:
    """The carriers of the checkpoint whose safetensors files are `files` (path in the repo -> local path),
    by tracing.carriers.select_carriers (`budget`: its keywords)."""
    headers = {file: read_header(Path(path)) for file, path in files.items()}
    shapes = {e.name: (e.dtype, e.shape) for header in headers.values() for e in header.entries.values()}
    holders = {e.name: file for file, header in headers.items() for e in header.entries.values()}
    return select_carriers(shapes, holders, **budget)


class OriginalCarriers:
    """The carrier tensors of the verified revision, which every residual is taken against."""

    def __init__(self, carriers: Sequence[Carrier]):
        if not carriers:
            raise ValueError("no carrier tensors")
        self.carriers = tuple(sorted(carriers, key=lambda c: (c.file, c.name)))

    @classmethod
    def from_files(cls, files: Mapping[str, Path], carriers: Collection[str] | None = None, **budget):
        """Read from `files` (path in the repo -> local safetensors file, verified or served base); with
        `carriers` None they are chosen by `choose_carriers` (`budget`: select_carriers' keywords)."""
        if carriers is None:
            carriers = choose_carriers(files, **budget)
        headers = {file: read_header(Path(path)) for file, path in files.items()}
        found = []
        for file, header in headers.items():
            for entry in header.entries.values():
                if entry.name in carriers:
                    if entry.dtype not in MARKABLE:
                        raise TracingInputError(f"{files[file]}: carrier {entry.name} is {entry.dtype}")
                    bits = read_raw(Path(files[file]), header, entry).view(MARKABLE[entry.dtype].uint)
                    found.append(Carrier(file, entry.name, entry.dtype, entry.shape, bits))
        missing = set(carriers) - {carrier.name for carrier in found}
        if missing:
            raise TracingInputError(f"the original lacks carrier tensors {', '.join(sorted(missing))}")
        return cls(found)

    @classmethod
    def from_directory(cls, directory: Path, carriers: Collection[str] | None = None, **budget):
        """Every .safetensors file under `directory`, named by its path there."""
        directory = Path(directory)
        files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*.safetensors"))}
        return cls.from_files(files, carriers, **budget)

    @property
    def names(self) -> list[str]:
        return [carrier.name for carrier in self.carriers]

    @property
    def weights(self) -> int:
        return sum(carrier.bits.size for carrier in self.carriers)


@dataclass(frozen=True)
class CodeBook:
    """Recipients' symbols for every block, one bit each (row per recipient): made once, scored many times."""

    recipients: tuple[str, ...]
    packed: np.ndarray = field(repr=False)  # uint8, (recipients, blocks / 8)


@dataclass(frozen=True)
class Residual:
    blocks: np.ndarray  # R_b, with zeros for blocks the leak does not hold
    weights_seen: int
    tensors_seen: tuple[str, ...]


class Tracer:
    """Residuals and scores for one traceable revision under one key."""

    def __init__(self, original: OriginalCarriers, keys: CopyKeys):
        self.original, self.keys = original, keys
        self.values, self.weights, self.first_block = {}, {}, {}
        position = 0
        for carrier in original.carriers:
            fmt = MARKABLE[carrier.dtype]
            pattern = keys.pattern(carrier.file, carrier.name, carrier.bits.size)
            self.values[carrier.name] = to_float32(carrier.bits, carrier.dtype)
            self.weights[carrier.name] = spacing(carrier.bits, fmt) * pattern
            self.first_block[carrier.name] = position
            position += (carrier.blocks + 7) // 8 * 8  # each tensor's symbols start on a byte
        self.blocks = position

    def residual(self, leaked: Mapping[str, np.ndarray]) -> Residual:
        """R from a leak's carriers (original name -> float32 values in the original's shape)."""
        blocks = np.zeros(self.blocks, dtype=np.float64)
        seen = []
        for carrier in self.original.carriers:
            if carrier.name not in leaked:
                continue
            weighted = np.asarray(leaked[carrier.name], np.float32).reshape(-1) - self.values[carrier.name]
            weighted *= self.weights[carrier.name]
            weighted = np.nan_to_num(weighted, nan=0.0, posinf=0.0, neginf=0.0)  # a broken value says nothing
            padded = np.zeros(carrier.blocks * BLOCK, dtype=np.float32)
            padded[: weighted.size] = weighted
            start = self.first_block[carrier.name]
            blocks[start : start + carrier.blocks] = padded.reshape(-1, BLOCK).sum(axis=1, dtype=np.float64)
            seen.append(carrier)
        return Residual(blocks, sum(c.bits.size for c in seen), tuple(c.name for c in seen))

    def read_residual(self, paths: Iterable[Path | str]) -> Residual:
        shapes = {carrier.name: carrier.shape for carrier in self.original.carriers}
        return self.residual(read_leak(paths, shapes))

    def codebook(self, recipients: Sequence[str]) -> CodeBook:
        rows = bytearray()
        for recipient in recipients:
            for carrier in self.original.carriers:
                rows += self.keys.code_bytes(carrier.file, carrier.name, recipient, carrier.blocks)
        packed = np.frombuffer(bytes(rows), dtype=np.uint8).reshape(len(recipients), self.blocks // 8)
        return CodeBook(tuple(recipients), packed)

    def scores(self, codebook: CodeBook, residuals: np.ndarray) -> np.ndarray:
        """t for every recipient of `codebook`: (recipients,) for one residual, (recipients, L) for L of them."""
        return score_packed(codebook.packed, residuals)


def score_packed(packed: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Scores of rows of symbols packed one bit each (set: +1) against residuals over the same blocks."""
    matrix = residuals.reshape(residuals.shape[0], -1)
    norms = np.sqrt((matrix**2).sum(axis=0))
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0).astype(np.float32)
    total = unit.sum(axis=0)
    out = np.empty((packed.shape[0], matrix.shape[1]), dtype=np.float64)
    rows = max(1, 2**24 // max(1, unit.shape[0]))  # 64 MB of unpacked symbols at a time
    for start in range(0, packed.shape[0], rows):
        bits = np.unpackbits(packed[start : start + rows], axis=1, bitorder="little").astype(np.float32)
        out[start : start + rows] = 2 * (bits @ unit) - total  # sum c R with c = 2 bit - 1
    return out.reshape(-1) if residuals.ndim == 1 else out


@dataclass(frozen=True)
class Suspect:
    recipient: str
    score: float | None  # None: named by the digest of a byte-exact file
    file: str | None = None  # that file

    def to_json(self) -> dict:
        return {"recipient": self.recipient, "score": self.score, "exact_file": self.file}


@dataclass(frozen=True)
class TraceResult:
    key_id: str
    threshold: float
    named: list[Suspect]  # byte-exact matches, or scores at or above the threshold, highest first
    highest_other: float | None  # the highest score of anyone not named (None: nobody was scored)
    ranked: list[Suspect]  # the highest scores, named or not
    weights_seen: int  # carrier weights the leak holds, of
    weights_total: int
    tensors_seen: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "key_id": self.key_id,
            "threshold": self.threshold,
            "named": [suspect.to_json() for suspect in self.named],
            "highest_other": self.highest_other,
            "ranked": [suspect.to_json() for suspect in self.ranked],
            "carrier_weights_seen": self.weights_seen,
            "carrier_weights_total": self.weights_total,
            "carriers_seen": list(self.tensors_seen),
        }


def exact_matches(paths: Iterable[Path | str], issued_digests: Mapping[str, str]) -> list[Suspect]:
    """Leaked files whose sha256 is that of a file of some recipient's copy (digest -> recipient)."""
    found = []
    for path in leak_files(paths):
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest in issued_digests:
            found.append(Suspect(issued_digests[digest], None, str(path)))
    return found


def trace(
    paths: Iterable[Path | str],
    tracer: Tracer,
    recipients: CodeBook | Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    issued_digests: Mapping[str, str] | None = None,
    top: int = 10,
) -> TraceResult:
    """Who a leak (files or directories) was issued to. A byte-exact file is named by its digest at once
    (`issued_digests`: sha256 -> recipient, of the served files, which differ between recipients; never
    of a file every copy shares); otherwise every recipient is scored and those at or above `threshold`
    are named."""
    paths = list(paths)
    weights_total = tracer.original.weights
    if issued_digests:
        exact = exact_matches(paths, issued_digests)
        if exact:
            return TraceResult(tracer.keys.key_id, threshold, exact, None, [], 0, weights_total)
    codebook = recipients if isinstance(recipients, CodeBook) else tracer.codebook(recipients)
    residual = tracer.read_residual(paths)
    scores = tracer.scores(codebook, residual.blocks)
    order = np.argsort(-scores, kind="stable")
    ranked = [Suspect(codebook.recipients[i], float(scores[i])) for i in order[:top]]
    count = int((scores >= threshold).sum())
    named = [Suspect(codebook.recipients[i], float(scores[i])) for i in order[:count]]
    others = scores[order[count:]]
    return TraceResult(
        key_id=tracer.keys.key_id,
        threshold=threshold,
        named=named,
        highest_other=float(others[0]) if others.size else None,
        ranked=ranked,
        weights_seen=residual.weights_seen,
        weights_total=weights_total,
        tensors_seen=residual.tensors_seen,
    )
