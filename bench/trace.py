"""Traceable copies, measured (issue 15), in one run on the CPU:

  tracing   a 4-layer LLaMA (hidden 512, intermediate 1376, vocab 8000: smaller than LLaMA's 32000 to
            keep the run short) in random bf16 weights, two shards; 10,000 recipients and 1,000,000 ids
            never issued; per threat, 50 leakers drawn at random (groups of colluders for collusion),
            each leak written as a file and traced. Required of each: every leaker is the top score (the
            c colluders the top c) and at or above the threshold; no innocent and no never-issued id is.
            The unmarked original and its quantizations are traced too: nobody may be named.
  quality   transformers' LlamaForCausalLM on the CPU, logits of 8 x 128 tokens: the marked copy
            against the original, beside the original (bf16) against the float32 weights it was rounded from.
  cost      a ~4 GB bf16 checkpoint (hidden 4096, 9 layers, 2 GB shards) and a ~2 GB one in /tmp: issuing
            a copy (every file's sha256 and a signature), serving a traceable file from local storage
            against the same untraced file, and the bytes S3 holds or streams per recipient.

Leak files of the transformed threats hold the carrier tensors only: each transformation acts tensor
by tensor and tracing reads nothing else. Verbatim and one-shard leaks are the recipients' whole files.
Never-issued ids are scored on 1,024 blocks drawn at random among those a leak holds (each id's
symbols are a random stream, as the keyed stream of an id never issued is): the same null law as a
full score (Hoeffding holds for any subset of blocks) at 1/12 of the cost; scoring a million ids on
every block would take 12,288 x 1,000,000 products per leak.

Usage: python -m bench.trace [--quick] [--skip-cost] [--skip-quality]; --quick runs the same model with
500 recipients, 20,000 never-issued ids, 6 leaks per threat and a 0.3 GB cost checkpoint, to try the
script (its results go to trace-quick.md).
"""

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.verify import publish_results
from tracing import attacks, synthetic
from tracing.floats import to_float32
from tracing.keys import BLOCK, CopyKeys, TraceKey
from tracing.safetensors_file import read_header
from tracing.served import (
    ServedFile,
    copy_digests,
    on_cores,
    prefix_digest,
    read_copy,
    read_file_range,
    recordable_prefix_state,
    write_served_base,
)
from tracing.tracer import (
    DEFAULT_THRESHOLD,
    OriginalCarriers,
    Tracer,
    choose_carriers,
    exact_matches,
    score_packed,
    trace,
)

THRESHOLD = DEFAULT_THRESHOLD
NULL_BLOCKS = 1024
FULL = {"recipients": 10_000, "never_issued": 1_000_000, "leakers": 50, "cost_gigabytes": (2.0, 4.0)}
QUICK = {"recipients": 500, "never_issued": 20_000, "leakers": 6, "cost_gigabytes": (0.3,)}
# --cost-only adds a release of many files, each holding carriers up to the cap, as a 405B one does (about
# 190 shards of 4-5 GB, each with a v_proj of 2^24 weights): GB, shard bytes.
MANY_FILES = {"full": (8.0, 512 * 2**20), "quick": (0.3, 32 * 2**20)}
COST_CONFIG = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "vocab_size": 32000}
QUICK_COST_CONFIG = {"hidden_size": 1024, "intermediate_size": 2752, "num_attention_heads": 8, "vocab_size": 8000}


@dataclass
class Release:
    """The bench model as the portal would hold it: verified files, served base files, keys, a tracer."""

    root: Path
    config: dict
    weights: dict  # float32, before rounding to bf16
    files: list[str]
    carriers: list[str]
    served: dict[str, ServedFile]
    tracer: Tracer
    recipients: list[str]
    codebook: object = None
    codebook_seconds: float = 0.0
    never_issued: np.ndarray = field(default=None, repr=False)

    def carriers_of(self, recipient: str) -> dict[str, np.ndarray]:
        values = {}
        for served in self.served.values():
            for name, bits in served.carrier_bits(recipient).items():
                values[name] = to_float32(bits, "BF16")
        return values

    def original_carriers(self) -> dict[str, np.ndarray]:
        return {c.name: to_float32(c.bits, c.dtype).reshape(c.shape) for c in self.tracer.original.carriers}


def build_release(root: Path, config: dict, recipients: int, never_issued: int, shards: int = 2) -> Release:
    weights = synthetic.random_weights(config)
    files = synthetic.write_checkpoint(root / "original", config, weights, shards=shards)
    carriers = choose_carriers({file: root / "original" / file for file in files})
    keys = CopyKeys(TraceKey(bytes(range(32))), "bench/llama-4l", "0" * 40)
    (root / "served").mkdir()
    served = {}  # a file without carriers is served as verified, the same for everyone
    for file in files:
        if set(read_header(root / "original" / file).entries) & set(carriers):
            layout = write_served_base(root / "original" / file, root / "served" / file, file, carriers)
            served[file] = ServedFile(root / "served" / file, layout, keys)
    tracer = Tracer(OriginalCarriers.from_directory(root / "original", carriers), keys)
    names = [f"grant-{number}" for number in range(recipients)]
    release = Release(root, config, weights, files, carriers, served, tracer, names)
    started = time.perf_counter()
    release.codebook = tracer.codebook(names)
    release.codebook_seconds = time.perf_counter() - started
    rng = np.random.Generator(np.random.Philox(2026))
    release.never_issued = rng.integers(0, 256, (never_issued, NULL_BLOCKS // 8), dtype=np.uint8)
    return release


# Each threat: (name, colluders, required, make) with make(release, leakers, directory, rng) -> leak paths.
def carrier_leak(change, dtype="BF16"):
    def make(release, leakers, directory, rng):
        copy = release.carriers_of(leakers[0])
        attacks.write_safetensors(directory / "leak.safetensors", {n: change(v, rng) for n, v in copy.items()}, dtype)
        return [directory / "leak.safetensors"]

    return make


def gguf_leak(quantization):
    def make(release, leakers, directory, rng):
        attacks.write_gguf(directory / "leak.gguf", release.carriers_of(leakers[0]), quantization)
        return [directory / "leak.gguf"]

    return make


def whole_copy(release, leakers, directory, rng):
    for file in release.files:
        if file in release.served:
            release.served[file].write_copy(directory / file, release.served[file].tail_for(leakers[0]))
        else:
            shutil.copyfile(release.root / "original" / file, directory / file)
    return [directory]


def one_shard(release, leakers, directory, rng):
    file = rng.choice(sorted(release.served))
    served = release.served[file]
    served.write_copy(directory / file, served.tail_for(leakers[0]))
    return [directory / file]


def collusion(combine):
    def make(release, leakers, directory, rng):
        copies = [release.carriers_of(recipient) for recipient in leakers]
        merged = {name: combine([copy[name] for copy in copies]) for name in copies[0]}
        attacks.write_safetensors(directory / "leak.safetensors", merged, "BF16")
        return [directory / "leak.safetensors"]

    return make


def kept(values, rng):
    return values


THREATS = [
    ("verbatim", 1, True, whole_copy),
    ("to fp16", 1, True, carrier_leak(kept, "F16")),
    ("to fp32", 1, True, carrier_leak(kept, "F32")),
    ("int8 per-row rounding", 1, True, carrier_leak(lambda v, rng: attacks.int8_rows(v))),
    ("4-bit rounding, groups of 128", 1, True, carrier_leak(lambda v, rng: attacks.int4_groups(v))),
    ("GGUF Q8_0 (gguf package)", 1, True, gguf_leak("Q8_0")),
    ("GGUF Q4_0 (gguf package)", 1, True, gguf_leak("Q4_0")),
    ("noise std 1e-3 (fine-tuning stand-in)", 1, True, carrier_leak(lambda v, rng: attacks.noise(v, 1e-3, rng))),
    ("one shard alone", 1, True, one_shard),
    ("2 colluders averaging", 2, True, collusion(attacks.average)),
    ("3 colluders averaging", 3, True, collusion(attacks.average)),
    ("5 colluders averaging", 5, False, collusion(attacks.average)),
    ("10 colluders averaging", 10, False, collusion(attacks.average)),
    ("5 colluders restoring where copies differ", 5, False, collusion(attacks.restore_differences)),
    ("10 colluders restoring where copies differ", 10, False, collusion(attacks.restore_differences)),
]


def original_leaks(release: Release, directory: Path) -> dict[str, list[Path]]:
    """The unmarked original, verbatim and as each threat would change it."""
    original, rng = release.original_carriers(), np.random.default_rng(7)
    changes = {
        "to fp16": lambda v: v,
        "int8 per-row rounding": attacks.int8_rows,
        "4-bit rounding, groups of 128": attacks.int4_groups,
        "noise std 1e-3": lambda v: attacks.noise(v, 1e-3, rng),
    }
    leaks = {"verbatim (the verified files)": [release.root / "original"]}
    for name, change in changes.items():
        path = directory / f"{name}.safetensors"
        attacks.write_safetensors(
            path, {n: change(v) for n, v in original.items()}, "F16" if "fp16" in name else "BF16"
        )
        leaks[name] = [path]
    for quantization in ("Q8_0", "Q4_0"):
        attacks.write_gguf(directory / f"{quantization}.gguf", original, quantization)
        leaks[f"GGUF {quantization}"] = [directory / f"{quantization}.gguf"]
    return leaks


def null_scores(release: Release, residuals: np.ndarray, rng) -> np.ndarray:
    """Scores of the never-issued ids, each leak on NULL_BLOCKS blocks it holds, drawn at random."""
    chosen = np.zeros((NULL_BLOCKS, residuals.shape[1]))
    for column in range(residuals.shape[1]):
        held = np.flatnonzero(residuals[:, column])
        picked = rng.choice(held, min(NULL_BLOCKS, held.size), replace=False) if held.size else held
        chosen[: picked.size, column] = residuals[picked, column]
    return score_packed(release.never_issued, chosen)


def run_threat(release: Release, threat, leakers_count: int, rng, scratch: Path) -> dict:
    name, colluders, required, make = threat
    started = time.perf_counter()
    groups = [list(rng.choice(len(release.recipients), colluders, replace=False)) for _ in range(leakers_count)]
    residuals = []
    for group in groups:
        directory = Path(tempfile.mkdtemp(dir=scratch))
        paths = make(release, [release.recipients[i] for i in group], directory, rng)
        residuals.append(release.tracer.read_residual(paths).blocks)
        shutil.rmtree(directory)
    residuals = np.stack(residuals, axis=1)
    scores = release.tracer.scores(release.codebook, residuals)
    row = {"threat": name, "colluders": colluders, "required": required, "leaks": len(groups)}
    row |= judge(scores, groups)
    row["never_issued_max"] = float(null_scores(release, residuals, rng).max())
    row["seconds"] = time.perf_counter() - started
    return row


def judge(scores: np.ndarray, groups: list[list[int]]) -> dict:
    """Per leak: are the leakers the top scores, all at or above the threshold; the lowest and highest
    leaker scores; the highest innocent score; how many leakers were named."""
    lowest, highest, innocent, top_and_named, named = np.inf, -np.inf, -np.inf, 0, 0
    for column, group in enumerate(groups):
        column_scores = scores[:, column]
        top = set(np.argsort(-column_scores)[: len(group)].tolist())
        ours = column_scores[group]
        others = np.delete(column_scores, group)
        lowest, highest = min(lowest, ours.min()), max(highest, ours.max())
        innocent = max(innocent, others.max())
        named += int((ours >= THRESHOLD).sum())
        top_and_named += int(top == set(group) and ours.min() >= THRESHOLD)
    return {
        "top_and_named": top_and_named,
        "named": named,
        "lowest_leaker": float(lowest),
        "highest_leaker": float(highest),
        "innocent_max": float(innocent),
    }


def run_originals(release: Release, scratch: Path, rng) -> list[dict]:
    rows = []
    for name, paths in original_leaks(release, scratch).items():
        residual = release.tracer.read_residual(paths).blocks
        scores = release.tracer.scores(release.codebook, residual)
        null = null_scores(release, residual[:, None], rng)
        rows.append({"leak": name, "highest": float(scores.max()), "never_issued_max": float(null.max())})
    return rows


def exact_digest_check(release: Release, scratch: Path, rng) -> tuple[int, int]:
    """Byte-exact copies of some recipients, named by digest among the digests of those and as many others."""
    picked = [release.recipients[i] for i in rng.choice(len(release.recipients), 20, replace=False)]
    issued = {}
    for recipient in picked:
        issued |= {digest: recipient for digest in copy_digests(release.served, recipient, {}).values()}
    hits = 0
    for recipient in picked[:10]:
        directory = Path(tempfile.mkdtemp(dir=scratch))
        whole_copy(release, [recipient], directory, rng)
        found = exact_matches([directory], issued)
        hits += bool(found) and {s.recipient for s in found} == {recipient}
        shutil.rmtree(directory)
    return hits, 10


def timed_trace(release: Release, scratch: Path, rng) -> float:
    """One `trace` of a whole verbatim copy against every recipient, as a command would run it."""
    directory = Path(tempfile.mkdtemp(dir=scratch))
    whole_copy(release, [release.recipients[3]], directory, rng)
    started = time.perf_counter()
    result = trace([directory], release.tracer, release.recipients)
    seconds = time.perf_counter() - started
    assert result.named[0].recipient == release.recipients[3]
    shutil.rmtree(directory)
    return seconds


# ---------------------------------------------------------------- quality
def quality(release: Release, recipients: list[str]) -> dict:
    """max |logit difference| over the logit range and mean KL over 8 x 128 tokens: the marked copy against the
    original, beside the original against the float32 weights it was rounded from."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in release.config.items() if k != "torch_dtype"})
    model = LlamaForCausalLM(config).eval()
    tokens = torch.from_numpy(np.random.default_rng(1).integers(0, config.vocab_size, (8, 128)))

    def logits(weights):
        model.load_state_dict({name: torch.from_numpy(values) for name, values in weights.items()}, strict=True)
        with torch.no_grad():
            return model(tokens).logits.double()

    float32 = logits(release.weights)
    rounded = {name: attacks.in_dtype(values, "BF16") for name, values in release.weights.items()}
    original = logits(rounded)
    rounding = compare(float32, original)
    marks = [compare(original, logits(rounded | release.carriers_of(r))) for r in recipients]
    worst = {key: max(mark[key] for mark in marks) for key in marks[0]}
    return {"rounding": rounding, "mark": worst, "recipients": len(recipients)}


def compare(reference, other) -> dict:
    import torch

    spread = float(reference.max() - reference.min())
    kl = torch.nn.functional.kl_div(other.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none")
    return {"max_abs_over_range": float((other - reference).abs().max()) / spread, "mean_kl": float(kl.sum(-1).mean())}


# ---------------------------------------------------------------- cost
def cost(gigabytes: float, scratch: Path, shape: dict, shard_bytes: int = 2 * 2**30) -> dict:
    """A bf16 LLaMA of `shape` with as many layers as make about `gigabytes` GB (at least 3), in shards of
    `shard_bytes`, measured."""
    from bench.verify import BASE_CONFIG, write_checkpoint

    config = {**BASE_CONFIG, **shape, "num_key_value_heads": shape["num_attention_heads"]}
    hidden, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    per_layer, fixed = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden, 2 * vocab * hidden + hidden
    layers = max(3, round((gigabytes * 1e9 / 2 - fixed) / per_layer))
    directory = scratch / f"cost-{gigabytes:g}gb"
    write_checkpoint(directory / "original", {**config, "num_hidden_layers": layers}, shard_bytes)
    try:
        return measure_cost(directory, layers)
    finally:
        shutil.rmtree(directory)


def measure_cost(directory: Path, layers: int) -> dict:
    from cryptography.hazmat.primitives.asymmetric import ec

    from bench.verify import sha256_of
    from verification.core.signature import sign_digests

    original = directory / "original"
    files = sorted(p.name for p in original.iterdir() if p.is_file())
    shards = [f for f in files if f.endswith(".safetensors")]
    shapes = {e.name: (e.dtype, e.shape) for f in shards for e in read_header(original / f).entries.values()}
    carriers = choose_carriers({file: original / file for file in shards})
    holding = [f for f in shards if set(read_header(original / f).entries) & set(carriers)]
    keys = CopyKeys(TraceKey(bytes(range(32))), "bench/llama-big", "1" * 40)
    (directory / "served").mkdir()
    started = time.perf_counter()
    served, prefix_states = {}, {}
    for file in holding:
        digest = prefix_digest()  # as the worker preparing the layout records it
        layout = write_served_base(original / file, directory / "served" / file, file, carriers, prefix_digest=digest)
        served[file] = ServedFile(directory / "served" / file, layout, keys)
        prefix_states[file], _ = recordable_prefix_state(digest, directory / "served" / file, layout)
    publish_seconds = time.perf_counter() - started
    fixed = {f: sha256_of(original / f) for f in files if f not in served}  # hashed at publishing anyway
    started = time.perf_counter()
    for file in served.values():
        file.prefix_state()
    prefix_seconds = time.perf_counter() - started
    key = ec.generate_private_key(ec.SECP256R1())
    issue, one_after_another = [], []
    for number in range(7):  # in turns: each file's tail on a core of its own, and the files one after another
        started = time.perf_counter()
        sign_digests("bench/llama-big", copy_digests(served, f"grant-{number}", fixed), key)
        issue.append(time.perf_counter() - started)
        started = time.perf_counter()
        serial = {f: s.sha256(s.tail_for(f"grant-{number}")) for f, s in served.items()}
        sign_digests("bench/llama-big", {**fixed, **serial}, key)
        one_after_another.append(time.perf_counter() - started)
    # A process that has just started: every base opened, then the first copy issued. Its prefixes are
    # hashed by reading them, or their hash states, recorded when the bases were written, are resumed.
    recorded = {f: {"prefix_state": prefix_states[f], "sha256": sha256_of(s.path)} for f, s in served.items()}

    def first_copy(states: dict) -> float:
        started = time.perf_counter()

        def open_base(file: str) -> ServedFile:
            return ServedFile(served[file].path, served[file].layout, keys, recorded=states.get(file))

        opened = dict(zip(served, on_cores(open_base, list(served)), strict=True))  # as issue_copy opens them
        sign_digests("bench/llama-big", copy_digests(opened, "grant-first", fixed), key)
        return time.perf_counter() - started

    first_hashed, first_resumed = [], []
    for _ in range(3):  # in turns
        first_hashed.append(first_copy({}))
        first_resumed.append(first_copy(recorded))
    serving = serve(served[holding[0]])
    size = sum((original / f).stat().st_size for f in files)
    tail = sum(s.layout.tail_size for s in served.values())
    return {
        "size": size, "files": len(files), "layers": layers, "carriers": carriers,
        "carrier_weights": sum(int(np.prod(shapes[c][1])) for c in carriers),
        "weights": sum(int(np.prod(s)) for _, s in shapes.values()),
        "tail": tail, "served_files": len(served), "publish_seconds": publish_seconds,
        "prefix_seconds": prefix_seconds, "issue_median": statistics.median(issue), "issue_max": max(issue),
        "first_hashed": min(first_hashed), "first_resumed": min(first_resumed),
        "issue_serial_median": statistics.median(one_after_another),
        **serving,
    }  # fmt: skip


def serve(served: ServedFile) -> dict:
    """A whole traceable file read as a download sends it (prefix from disk, tail from memory) against
    the same untraced file (the base file, the same size) read the same way; best of 3, alternating."""

    def drain(pieces) -> int:
        return sum(len(piece) for piece in pieces)

    path, layout = served.path, served.layout
    tail = served.tail_for("grant-0")
    drain(read_file_range(path, 0, layout.size))  # warm the page cache
    plain, traced, generated = [], [], []
    for _ in range(3):
        started = time.perf_counter()
        assert drain(read_file_range(path, 0, layout.size)) == layout.size
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert drain(read_copy(path, layout, tail)) == layout.size
        traced.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert drain(read_copy(path, layout, served.tail_for("grant-1"))) == layout.size
        generated.append(time.perf_counter() - started)
    return {
        "serve_size": layout.size,
        "serve_plain": min(plain),
        "serve_traced": min(traced),
        "serve_generated": min(generated),
    }


# ---------------------------------------------------------------- report
def tracing_lines(release: Release, rows: list[dict], originals: list[dict], exact, trace_seconds) -> list[str]:
    carriers = release.tracer.original
    total = sum(w.size for w in release.weights.values())
    blocks = sum(c.blocks for c in carriers.carriers)
    config = release.config
    lines = [
        f"## Tracing: {len(release.recipients):,} recipients, {len(release.never_issued):,} ids never issued",
        f"Model: LLaMA, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, intermediate "
        f"{config['intermediate_size']}, vocab {config['vocab_size']}, {total:,} weights in random bf16, "
        f"{len(release.files)} shards. Carriers: {', '.join(carriers.names)}: {carriers.weights:,} weights "
        f"({carriers.weights / total:.2%}), {blocks:,} blocks of {BLOCK}. Threshold {THRESHOLD:g}. Never-issued ids "
        f"on {NULL_BLOCKS:,} blocks per leak. Making the {len(release.recipients):,} recipients' symbols: "
        f"{release.codebook_seconds:.2f} s; one `trace` of a whole copy against all of them: {trace_seconds:.2f} s.",
        "",
        "| threat | leaks | leakers top and >= threshold | lowest leaker score | highest innocent "
        "| highest never-issued | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["required"]:
            lines.append(
                f"| {row['threat']} | {row['leaks']} | {row['top_and_named']}/{row['leaks']} | "
                f"{row['lowest_leaker']:.1f} | {row['innocent_max']:.2f} | {row['never_issued_max']:.2f} | "
                f"{row['seconds']:.1f} |"
            )
    lines += [
        "",
        f"Byte-exact copies named by their digest alone: {exact[0]}/{exact[1]}.",
        "",
        "Reported, not required (leakers named = colluders at or above the threshold, of all colluders):",
        "",
        "| threat | leaks | colluders named | lowest colluder score | highest colluder score | highest innocent "
        "| highest never-issued |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if not row["required"]:
            lines.append(
                f"| {row['threat']} | {row['leaks']} | {row['named']}/{row['leaks'] * row['colluders']} | "
                f"{row['lowest_leaker']:.1f} | {row['highest_leaker']:.1f} | {row['innocent_max']:.2f} | "
                f"{row['never_issued_max']:.2f} |"
            )
    lines += ["", "The unmarked original, and as the threats change it: nobody may be named.", ""]
    lines += ["| leak | highest recipient score | highest never-issued |", "| --- | --- | --- |"]
    lines += [f"| {o['leak']} | {o['highest']:.2f} | {o['never_issued_max']:.2f} |" for o in originals]
    return lines


def quality_lines(result: dict) -> list[str]:
    rounding, mark = result["rounding"], result["mark"]
    return [
        "",
        f"## Quality: logits of 8 x 128 tokens (the worst of {result['recipients']} recipients' copies)",
        "",
        "| comparison | max abs difference / logit range | mean KL (nats) |",
        "| --- | --- | --- |",
        f"| float32 weights -> the bf16 original (its own rounding) | {rounding['max_abs_over_range']:.2e} | "
        f"{rounding['mean_kl']:.2e} |",
        f"| the bf16 original -> a marked copy | {mark['max_abs_over_range']:.2e} | {mark['mean_kl']:.2e} |",
        "",
        f"marked / rounding: {mark['max_abs_over_range'] / rounding['max_abs_over_range']:.2f}x (max), "
        f"{mark['mean_kl'] / rounding['mean_kl']:.2f}x (KL); required <= 1",
    ]


def cost_lines(results: list[dict]) -> list[str]:
    lines = [
        "",
        "## Cost: issuing and serving copies of multi-GB checkpoints (2 GB shards, and one of many smaller)",
        "",
        "| checkpoint | files | carriers (weights, share) | tail per recipient | issue a copy: median / max s "
        "| serve: untraced s | traced, tail in memory | x untraced's rate | traced, tail made per request "
        "| x untraced's rate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['size'] / 1e9:.2f} GB, {r['layers']} layers | {r['files']} | {len(r['carriers'])} "
            f"({r['carrier_weights']:,}, {r['carrier_weights'] / r['weights']:.2%}) | {r['tail'] / 2**20:.0f} MiB | "
            f"{r['issue_median']:.3f} / {r['issue_max']:.3f} | {r['serve_plain']:.2f} | {r['serve_traced']:.2f} | "
            f"{r['serve_plain'] / r['serve_traced']:.2f} | {r['serve_generated']:.2f} | "
            f"{r['serve_plain'] / r['serve_generated']:.2f} |"
        )
    lines += [
        "",
        f"Issuing a copy with each file's tail made and hashed on a core of its own ({os.cpu_count()} here) "
        "against the files one after another (the code before), median of 7 in turns:",
        "",
        "| checkpoint | files holding carriers | one after another | on the cores | ratio |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['size'] / 1e9:.2f} GB in {r['files']} files | {r['served_files']} | "
            f"{r['issue_serial_median']:.3f} s | {r['issue_median']:.3f} s "
            f"| **{r['issue_serial_median'] / r['issue_median']:.2f}x** |"
            for r in results
        ),
        "",
        "The first copy a web process issues (every served base opened, then the copy issued; best of 3 in "
        "turns, page cache warm):",
        "",
        "| checkpoint | prefixes hashed by reading them | prefix states recorded at preparing, resumed | ratio |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['size'] / 1e9:.2f} GB in {r['files']} files | {r['first_hashed']:.3f} s "
            f"| {r['first_resumed']:.3f} s | **{r['first_hashed'] / r['first_resumed']:.1f}x** faster |"
            for r in results
        ),
    ]
    last = max(results, key=lambda r: r["size"])
    lines += [
        "",
        f"Issuing a copy: every file's sha256 (the served files' from their prefix's hash state, copied, and "
        f"the tail; the others' as published) and one ECDSA P-256 signature over them in the model-signing "
        f"format (verification.core.signature). Target < 0.5 s; it grows with the tail, which the carrier "
        f"budget caps at 64 MiB in all, and with the number of files, not with their size. Once per file and "
        f"process: the served base written at publishing, {last['publish_seconds']:.1f} s for the largest, and "
        f"its prefix hashed, {last['prefix_seconds']:.1f} s. Serving reads the "
        f"{last['serve_size'] / 1e9:.2f} GB served file in 1 MiB pieces (target >= 0.9x).",
        f"S3, per recipient: composing an object (UploadPartCopy of the prefix, an uploaded part for the tail) "
        f"uploads {last['tail'] / 2**20:.0f} MiB ({last['tail'] / last['size']:.1%} of the checkpoint) and stores "
        f"a whole copy, {last['size'] / 1e9:.2f} GB, until it expires; streaming the prefix from S3 through the "
        f"web tier stores nothing and streams the {last['size'] / 1e9:.2f} GB per download, the tail made in "
        f"memory.",
    ]
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to try the script")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument(
        "--cost-only", action="store_true", help="only the cost of copies (bench/results/trace-cost.md)"
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    config = synthetic.llama_config()  # the same model in both: --quick shrinks the counts and the cost checkpoint
    scratch = Path(tempfile.mkdtemp(prefix="weightgate-trace-bench-", dir=args.scratch))
    load_before = os.getloadavg()[0]
    if args.cost_only:
        try:
            shape = QUICK_COST_CONFIG if args.quick else COST_CONFIG
            results = [cost(gigabytes, scratch, shape) for gigabytes in sizes["cost_gigabytes"]]
            many_gigabytes, many_shard_bytes = MANY_FILES["quick" if args.quick else "full"]
            results.append(cost(many_gigabytes, scratch, shape, many_shard_bytes))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        header = [
            "# Traceable copies: what issuing and serving them costs",
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after",
        ]
        publish_results("trace-cost-quick.md" if args.quick else "trace-cost.md", header + cost_lines(results))
        return
    try:
        release = build_release(scratch / "release", config, sizes["recipients"], sizes["never_issued"])
        rng = np.random.default_rng(15)
        rows = []
        for threat in THREATS:
            rows.append(run_threat(release, threat, sizes["leakers"], rng, scratch))
            print(rows[-1], flush=True)
        originals = run_originals(release, scratch, rng)
        lines = [
            "# Traceable copies: what a leak survives, and what copies cost",
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"load average {load_before:.1f} before the run",
            "",
            *tracing_lines(release, rows, originals, exact_digest_check(release, scratch, rng),
                           timed_trace(release, scratch, rng)),
        ]  # fmt: skip
        if not args.skip_quality:
            lines += quality_lines(quality(release, release.recipients[:3]))
        if not args.skip_cost:
            shape = QUICK_COST_CONFIG if args.quick else COST_CONFIG
            lines += cost_lines([cost(gigabytes, scratch, shape) for gigabytes in sizes["cost_gigabytes"]])
        lines[1] += f", {os.getloadavg()[0]:.1f} after"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    publish_results("trace-quick.md" if args.quick else "trace.md", lines)


if __name__ == "__main__":
    main()
