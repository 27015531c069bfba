"""On a machine with an NVIDIA GPU: full verification with smoke inference against the floor.

One prepared run (python -m bench.gpu_verify [--dir DIR]). First it checks the GPU path on tiny
checkpoints (float32 and bf16, with the publisher's reference logits computed on the CPU, and wrong
ones), then generates a LLaMA-shaped checkpoint of about 3.6B parameters (bf16, 2 GB shards) and,
dropping the page cache before each arm, times:

  floor       reading every shard once (a thread per file, 1 MiB reads, bytes discarded)
  naive       a sha256 pass, then transformers' from_pretrained to the GPU, an isfinite scan of every
              parameter and a forward pass
  weightgate  `check_directory(DIR)`: hashes, strict headers, index, config, tensor scan and the smoke
              pass on the GPU, with each shard read once (the tensors go to the GPU from that read)
  weightgate, one allocation per tensor
              the same with an allocation on the GPU for each tensor (loading.ONE_ALLOCATION_PER_FILE
              off), the default before 2026-11-29, where each file's tensors are now carved from one
  weightgate without read-ahead
              the same with the reader thread off (READ_AHEAD_WINDOWS = 0): page faults do the reading
  weightgate without smoke
              smoke=False: what the CPU checks alone cost, to tell the GPU load apart
  weightgate streamed (1 GiB)
              the smoke pass capped at 1 GiB of GPU memory (WEIGHTGATE_SMOKE_MAX_BYTES): the model runs
              block by block, each block read again from the page cache the hashing read left (on every
              core, into a pinned buffer) when its turn comes (target: 1.3x the floor, at most 2 GiB on
              the GPU)
  weightgate streamed (1 GiB), files read as streams
              the same with the files opened as storage's objects are (no descriptor to map or read
              again): the weights wait in host memory from the hashing read to their block's turn

Each arm runs three times, interleaved (the best counts; --rounds and --arm change that). Prints the
ratios and writes them to bench/results/gpu-verify.md.
Needs root for drop_caches.

`--cpu-dry-run` runs the same script end to end on a machine without a GPU, on tiny checkpoints (a
few MB; the streamed arm capped at a quarter of the weights), with the page cache left as it is: it
proves the script runs before GPU time is spent on it, and measures nothing worth keeping (nothing
is written to bench/results/).
"""

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.verify import RESULTS, as_streams, files_of, publish_results, sha256_of, write_checkpoint
from verification.core.sizes import format_bytes

CONFIG_3_6B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
}
# The same shape, 32 times narrower with a 32 times smaller vocabulary: what --cpu-dry-run checks (about 7 MB).
CONFIG_DRY_RUN = {
    **CONFIG_3_6B,
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "vocab_size": 4008,
}
SHAPES = {False: "about 3.6B parameters, 2 GB shards", True: "CPU dry run: the 3.6B shape, 32 times narrower"}
TOKEN_IDS = [[1, 450, 4996, 17354, 1701, 432, 3151, 975]]
STREAMED_ARM = "weightgate streamed (1 GiB)"
STREAMED_FROM_STREAMS_ARM = "weightgate streamed (1 GiB), files read as streams"
PER_TENSOR_ARM = "weightgate, one allocation per tensor"
STREAMED_BUDGET = 2**30
STREAMED_PEAK_TARGET = 2 * 2**30


class Device:
    """The GPU the benchmark measures, or the CPU in a dry run: the same arms, nothing measured on a GPU."""

    def __init__(self, dry_run: bool):
        import torch

        self.torch = torch
        self.name = "cpu" if dry_run else "cuda"
        self.dry_run = dry_run

    def reset(self) -> None:
        gc.collect()
        if not self.dry_run:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
            drop_page_cache()

    def synchronize(self) -> None:
        if not self.dry_run:
            self.torch.cuda.synchronize()

    def peak_bytes(self, extra: dict) -> int | None:
        """The GPU's high-water mark; in a dry run, the weights the smoke pass says it held at once."""
        if not self.dry_run:
            return self.torch.cuda.max_memory_allocated()
        return (extra.get("smoke") or {}).get("held_bytes_peak")


DEVICE: Device | None = None  # set by main()


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def disk_backed(directory: Path) -> Path:
    """`directory`, unless it is on a RAM file system, where dropping the page cache would mean nothing."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(directory).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    if best is not None and best[2] in ("tmpfs", "ramfs"):
        return Path("var/gpu-bench").resolve()
    return directory


def parallel(function, paths):
    with ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
        return list(pool.map(function, paths))


def read_once(path: Path) -> int:
    buffer, total = bytearray(1024 * 1024), 0
    with open(path, "rb") as handle:
        while count := handle.readinto(buffer):
            total += count
    return total


def arm_floor(directory: Path) -> dict:
    parallel(read_once, files_of(directory))
    return {}


def arm_naive(directory: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    parallel(sha256_of, files_of(directory))
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16, device_map=DEVICE.name)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    with torch.inference_mode():
        ids = [[token % model.config.vocab_size for token in TOKEN_IDS[0]]]  # the dry run's vocabulary is small
        logits = model(torch.tensor(ids, device=DEVICE.name)).logits
    DEVICE.synchronize()
    return {"finite": finite, "logits_finite": bool(torch.isfinite(logits).all())}


class PhaseTimer:
    """Times the two phases of `check_files` (the one-read scan, the smoke pass) by wrapping them."""

    def __init__(self):
        import verification.core.checks as checks

        self.checks, self.seconds = checks, {}

    def wrap(self, name: str):
        original = getattr(self.checks, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = round(time.perf_counter() - started, 2)

        setattr(self.checks, name, timed)
        return original

    def __enter__(self):
        self.originals = {name: self.wrap(name) for name in ("scan_files", "run_smoke")}
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(self.checks, name, original)


def weightgate(
    directory: Path,
    smoke: bool = True,
    read_ahead: bool = True,
    budget: int | None = None,
    streams: bool = False,
    one_allocation: bool = True,
) -> dict:
    from verification.core import loading, scan
    from verification.core.checks import check_directory, check_files

    windows, allocation = scan.READ_AHEAD_WINDOWS, loading.ONE_ALLOCATION_PER_FILE
    scan.READ_AHEAD_WINDOWS = windows if read_ahead else 0
    loading.ONE_ALLOCATION_PER_FILE = one_allocation
    if budget is not None:
        os.environ["WEIGHTGATE_SMOKE_MAX_BYTES"] = str(budget)
    try:
        with PhaseTimer() as phases:
            report = (
                check_files(as_streams(directory), smoke=smoke) if streams else check_directory(directory, smoke=smoke)
            )
    finally:
        scan.READ_AHEAD_WINDOWS = windows
        loading.ONE_ALLOCATION_PER_FILE = allocation
        os.environ.pop("WEIGHTGATE_SMOKE_MAX_BYTES", None)
    DEVICE.synchronize()
    assert report.ok, [c.message for c in report.failures]
    assert budget is None or report.smoke["placement"] == "streamed", report.smoke
    kept = ("device", "dtype", "seconds", "placement", "held_bytes_peak", "prefetch", "reread_from_files")
    return {"phases": phases.seconds, "smoke": {k: report.smoke[k] for k in kept if k in report.smoke}}


def streamed_budget(directory: Path) -> int:
    """1 GiB on the GPU; a quarter of the tiny weights in a dry run."""
    return sum(p.stat().st_size for p in files_of(directory)) // 4 if DEVICE.dry_run else STREAMED_BUDGET


ARMS = {
    "floor": arm_floor,
    "naive": arm_naive,
    "weightgate": weightgate,
    PER_TENSOR_ARM: lambda directory: weightgate(directory, one_allocation=False),
    "weightgate without read-ahead": lambda directory: weightgate(directory, read_ahead=False),
    "weightgate without smoke": lambda directory: weightgate(directory, smoke=False),
    STREAMED_ARM: lambda directory: weightgate(directory, budget=streamed_budget(directory)),
    STREAMED_FROM_STREAMS_ARM: lambda directory: weightgate(directory, budget=streamed_budget(directory), streams=True),
}


def reference_logits(directory: Path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype="auto")  # on the CPU: the publisher's side
    with torch.inference_mode():
        return model(ids.reshape(1, -1)).logits[0].float()


def check_gpu_path(scratch: Path) -> list[str]:
    """The smoke pass on the GPU agrees with the CPU, in float32 and bf16, whole and streamed block by
    block (a quarter of the weights allowed), and refuses wrong logits."""
    import torch
    from safetensors.torch import save_file

    from verification.core.checks import check_directory
    from verification.core.layout import SMOKE_REFERENCE_NAME
    from verification.core.tiny_llama import TINY_LLAMA_CONFIG, write_tiny_llama

    lines = []
    ids = torch.tensor([5, 17, 99, 3, 1200], dtype=torch.int64)
    for dtype in ("float32", "bfloat16"):
        directory = scratch / dtype
        if dtype == "float32":
            write_tiny_llama(directory, config_overrides={"num_hidden_layers": 12})
        else:
            write_checkpoint(directory, {**TINY_LLAMA_CONFIG, "num_hidden_layers": 12, "torch_dtype": "bfloat16"})
        want = reference_logits(directory, ids)
        save_file({"input_ids": ids, "logits": want}, directory / SMOKE_REFERENCE_NAME)
        whole = check_directory(directory)
        os.environ["WEIGHTGATE_SMOKE_MAX_BYTES"] = str(sum(p.stat().st_size for p in files_of(directory)) // 4)
        try:
            streamed = check_directory(directory)
        finally:
            os.environ.pop("WEIGHTGATE_SMOKE_MAX_BYTES")
        save_file({"input_ids": ids, "logits": want + 0.5}, directory / SMOKE_REFERENCE_NAME)
        refused = [c.code for c in check_directory(directory).failures] == ["LogitsDiffer"]
        lines.append(
            f"- {dtype}: {agreement(whole, 'whole')}; {agreement(streamed, 'streamed')}; "
            f"reference + 0.5 {'refused (LogitsDiffer)' if refused else 'NOT refused'}"
        )
        print(lines[-1], flush=True)
    return lines


def agreement(report, placement: str) -> str:
    """How one smoke pass compared with the CPU reference, in a few words."""
    smoke = report.smoke
    good = (
        report.ok
        and smoke.get("device", "").startswith(DEVICE.name)
        and smoke.get("placement") == placement
        and "LogitsMatchReference" in {c.code for c in report.checks}
    )
    verdict = "passes" if good else "FAILED " + repr([c.message for c in report.failures] or smoke)
    return (
        f"{placement} on {smoke.get('device')}, max |{DEVICE.name} - CPU reference| = "
        f"{smoke.get('logits_max_abs_diff')}, {verdict}"
    )


def environment(directory: Path) -> list[str]:
    import safetensors
    import torch
    import transformers

    driver = "no GPU (CPU dry run)"
    if not DEVICE.dry_run:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    filesystem = subprocess.run(["df", "-hT", str(directory)], capture_output=True, text=True).stdout.splitlines()[-1]
    return [
        f"machine: {driver}; {cpu}, {os.cpu_count()} cores; file system: {' '.join(filesystem.split())}",
        f"software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, safetensors {safetensors.__version__}",
    ]


def main(argv=None) -> None:
    global DEVICE
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_verify")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/weightgate-gpu-bench"))
    parser.add_argument("--cpu-dry-run", action="store_true", help="run every arm on the CPU on tiny checkpoints")
    parser.add_argument(
        "--arm", action="append", help="an arm to run, by name, repeatable (default: all); the floor always runs"
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each arm runs, interleaved (default 3)")
    args = parser.parse_args(argv)
    if unknown := set(args.arm or ()) - set(ARMS):  # before any GPU time goes into the checkpoint
        parser.error(
            f"no arm named {', '.join(map(repr, sorted(unknown)))}; the arms are: {', '.join(map(repr, ARMS))}"
        )
    import torch
    import transformers  # noqa: F401  (imports are start-up cost, not verification)

    from verification.core.model_checks import expected_parameters
    from verification.core.tiny_llama import TINY_LLAMA_CONFIG

    DEVICE = Device(dry_run=args.cpu_dry_run)
    assert DEVICE.dry_run or torch.cuda.is_available(), "this benchmark needs an NVIDIA GPU (or --cpu-dry-run)"
    directory = disk_backed(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    expected_parameters(TINY_LLAMA_CONFIG)  # load transformers' model code once, as a running worker has
    if not DEVICE.dry_run:
        torch.zeros(1, device="cuda")  # create the CUDA context outside the timings
    lines = environment(directory)
    print("\n".join(lines), flush=True)
    lines += ["", f"Correctness of the {DEVICE.name} smoke pass on tiny checkpoints:"]
    try:
        lines += check_gpu_path(directory.parent / "weightgate-gpu-tiny")
    except Exception:
        traceback.print_exc()
        lines.append("- the GPU correctness check raised (see the log)")
    checkpoint = directory / ("checkpoint-dry-run" if DEVICE.dry_run else "checkpoint")
    if not (checkpoint / "config.json").exists():
        started = time.perf_counter()
        write_checkpoint(checkpoint, CONFIG_DRY_RUN if DEVICE.dry_run else CONFIG_3_6B)
        print(f"generated {checkpoint} in {time.perf_counter() - started:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in files_of(checkpoint))
    arms = [name for name in ARMS if not args.arm or name == "floor" or name in args.arm]
    results, notes, rounds = run_arms(checkpoint, arms, args.rounds)
    lines = [
        f"# GPU verification of a {size / 1e9:.2f} GB bf16 checkpoint ({SHAPES[DEVICE.dry_run]})",
        *lines,
        "",
        "Page cache "
        + ("left as it was (CPU dry run)" if DEVICE.dry_run else "dropped before each arm")
        + f"; each arm ran {args.rounds} times, interleaved, the best counts.",
        "",
        *result_table(results, notes, rounds),
        "",
        *rounds_table(rounds),
    ]
    if DEVICE.dry_run:
        print("\n".join([*lines, "", f"CPU dry run on a {size / 1e6:.1f} MB checkpoint; nothing written to {RESULTS}"]))
        return
    publish_results("gpu-verify.md", lines)


def run_arms(checkpoint: Path, arms: list[str], rounds: int) -> tuple[dict, dict, list[dict]]:
    """Each of `arms` `rounds` times, interleaved: its best time, notes (GPU peak, phases, failures) and
    each round's times (the floor moves from round to round, so each round is read against its own)."""
    results, notes, per_round = {}, {}, []
    for name in arms * rounds:
        if name == arms[0]:
            per_round.append({})
        DEVICE.reset()
        started = time.perf_counter()
        try:
            extra = ARMS[name](checkpoint)
        except Exception as error:
            traceback.print_exc()
            notes[name] = f"failed: {type(error).__name__}: {error}"[:300]
            continue
        seconds = time.perf_counter() - started
        per_round[-1][name] = seconds
        peak = DEVICE.peak_bytes(extra)
        peak_text = "-" if peak is None else format_bytes(peak)
        print(f"{name}: {seconds:.2f} s, {DEVICE.name} peak {peak_text} {extra}", flush=True)
        if seconds < results.get(name, (float("inf"),))[0]:
            results[name] = (seconds, peak)
            notes[name] = f"{DEVICE.name} peak {peak_text}" + (f"; {extra['phases']}" if "phases" in extra else "")
    return results, notes, per_round


def rounds_table(per_round: list[dict]) -> list[str]:
    """Each round's seconds and, beside each, that round's ratio to its own floor."""
    arms = [name for name in ARMS if name != "floor" and any(name in seconds for seconds in per_round)]
    lines = [
        "Per round, seconds and (x that round's floor):",
        "",
        "| round | floor | " + " | ".join(arms) + " |",
        "| --- | --- | " + " | ".join("---" for _ in arms) + " |",
    ]
    for number, seconds in enumerate(per_round, 1):
        floor = seconds.get("floor")
        cells = [
            f"{seconds[name]:.2f} ({seconds[name] / floor:.2f})" if name in seconds and floor else "-" for name in arms
        ]
        lines.append(f"| {number} | {floor:.2f} | " + " | ".join(cells) + " |" if floor else f"| {number} | - |")
    # The floor moves by up to a fifth from round to round: the median of the paired ratios reads through that.
    medians = [statistics.median(ratios) if (ratios := paired_ratios(per_round, name)) else None for name in arms]
    cells = ["-" if median is None else f"({median:.2f})" for median in medians]
    return [*lines, "| median | | " + " | ".join(cells) + " |"]


def paired_ratios(per_round: list[dict], name: str) -> list[float]:
    """Each round's time of arm `name` over that round's floor."""
    return [seconds[name] / seconds["floor"] for seconds in per_round if name in seconds and seconds.get("floor")]


def result_table(results: dict, notes: dict, per_round: list[dict]) -> list[str]:
    floor = results.get("floor", (None,))[0]

    def against_floor(name: str) -> str:
        """Best to best, and the median of the rounds' paired ratios."""
        ratios = paired_ratios(per_round, name)
        median = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        return f"{results[name][0] / floor:.2f}x best to best, {median} the median of rounds"

    lines = [
        "| arm | seconds | x floor | notes |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {results[name][0]:.2f} | {results[name][0] / floor:.2f} | {notes.get(name, '')} |"
            if name in results and floor
            else f"| {name} | - | - | {notes.get(name, 'not measured')} |"
            for name in ARMS
            if name in results or name in notes
        ),
    ]
    if floor and "weightgate" in results:
        lines += ["", f"weightgate / floor = {against_floor('weightgate')} (target <= 1.1x)"]
        if PER_TENSOR_ARM in results:
            lines.append(f"{PER_TENSOR_ARM} / floor = {against_floor(PER_TENSOR_ARM)}")
    if floor and STREAMED_ARM in results:
        peak = results[STREAMED_ARM][1]
        lines.append(
            f"{STREAMED_ARM} / floor = {against_floor(STREAMED_ARM)} (target <= 1.3x), {DEVICE.name} peak "
            f"{'-' if peak is None else format_bytes(peak)} (target <= {format_bytes(STREAMED_PEAK_TARGET)})"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
