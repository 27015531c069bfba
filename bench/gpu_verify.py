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
  weightgate without read-ahead
              the same with the reader thread off (READ_AHEAD_WINDOWS = 0): page faults do the reading
  weightgate without smoke
              smoke=False: what the CPU checks alone cost, to tell the GPU load apart

Each arm runs twice (the best counts). Prints the ratios and writes them to bench/results/gpu-verify.md.
Needs root for drop_caches.
"""

import argparse
import gc
import os
import platform
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.verify import files_of, publish_results, sha256_of, write_checkpoint

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
TOKEN_IDS = [[1, 450, 4996, 17354, 1701, 432, 3151, 975]]
ARM_ORDER = ("floor", "naive", "weightgate", "weightgate without read-ahead", "weightgate without smoke") * 2


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
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16, device_map="cuda")
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    with torch.inference_mode():
        logits = model(torch.tensor(TOKEN_IDS, device="cuda")).logits
    torch.cuda.synchronize()
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


def weightgate(directory: Path, smoke: bool = True, read_ahead: bool = True) -> dict:
    import torch

    from verification.core import scan
    from verification.core.checks import check_directory

    windows = scan.READ_AHEAD_WINDOWS
    scan.READ_AHEAD_WINDOWS = windows if read_ahead else 0
    try:
        with PhaseTimer() as phases:
            report = check_directory(directory, smoke=smoke)
    finally:
        scan.READ_AHEAD_WINDOWS = windows
    torch.cuda.synchronize()
    assert report.ok, [c.message for c in report.failures]
    return {"phases": phases.seconds, "smoke": {k: report.smoke.get(k) for k in ("device", "dtype", "seconds")}}


ARMS = {
    "floor": arm_floor,
    "naive": arm_naive,
    "weightgate": weightgate,
    "weightgate without read-ahead": lambda directory: weightgate(directory, read_ahead=False),
    "weightgate without smoke": lambda directory: weightgate(directory, smoke=False),
}


def reference_logits(directory: Path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype="auto")  # on the CPU: the publisher's side
    with torch.inference_mode():
        return model(ids.reshape(1, -1)).logits[0].float()


def check_gpu_path(scratch: Path) -> list[str]:
    """The smoke pass on the GPU agrees with the CPU, in float32 and bf16, and refuses wrong logits."""
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
            write_tiny_llama(directory)
        else:
            write_checkpoint(directory, {**TINY_LLAMA_CONFIG, "torch_dtype": "bfloat16"})
        want = reference_logits(directory, ids)
        save_file({"input_ids": ids, "logits": want}, directory / SMOKE_REFERENCE_NAME)
        report = check_directory(directory)
        codes = {c.code for c in report.checks}
        good = report.ok and report.smoke["device"].startswith("cuda") and "LogitsMatchReference" in codes
        save_file({"input_ids": ids, "logits": want + 0.5}, directory / SMOKE_REFERENCE_NAME)
        refused = [c.code for c in check_directory(directory).failures] == ["LogitsDiffer"]
        lines.append(
            f"- {dtype}: smoke on {report.smoke.get('device')}, max |GPU - CPU reference| = "
            f"{report.smoke.get('logits_max_abs_diff')}, {'passes' if good else 'FAILED ' + repr(report.failures)}; "
            f"reference + 0.5 {'refused (LogitsDiffer)' if refused else 'NOT refused'}"
        )
        print(lines[-1], flush=True)
    return lines


def environment(directory: Path) -> list[str]:
    import safetensors
    import torch
    import transformers

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_verify")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/weightgate-gpu-bench"))
    args = parser.parse_args()
    import torch
    import transformers  # noqa: F401  (imports are start-up cost, not verification)

    from verification.core.model_checks import expected_parameters
    from verification.core.tiny_llama import TINY_LLAMA_CONFIG

    assert torch.cuda.is_available(), "this benchmark needs an NVIDIA GPU"
    directory = disk_backed(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    expected_parameters(TINY_LLAMA_CONFIG)  # load transformers' model code once, as a running worker has
    torch.zeros(1, device="cuda")  # create the CUDA context outside the timings
    lines = environment(directory)
    print("\n".join(lines), flush=True)
    lines += ["", "Correctness of the GPU smoke pass on tiny checkpoints:"]
    try:
        lines += check_gpu_path(directory.parent / "weightgate-gpu-tiny")
    except Exception:
        traceback.print_exc()
        lines.append("- the GPU correctness check raised (see the log)")
    checkpoint = directory / "checkpoint"
    if not (checkpoint / "config.json").exists():
        started = time.perf_counter()
        write_checkpoint(checkpoint, CONFIG_3_6B)
        print(f"generated {checkpoint} in {time.perf_counter() - started:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in files_of(checkpoint))
    results, notes = {}, {}
    for name in ARM_ORDER:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        drop_page_cache()
        started = time.perf_counter()
        try:
            extra = ARMS[name](checkpoint)
        except Exception as error:
            traceback.print_exc()
            notes[name] = f"failed: {type(error).__name__}: {error}"[:300]
            continue
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name}: {seconds:.2f} s, GPU peak {peak:.1f} GiB {extra}", flush=True)
        if seconds < results.get(name, float("inf")):
            results[name] = seconds
            notes[name] = f"GPU peak {peak:.1f} GiB" + (f"; {extra['phases']}" if "phases" in extra else "")
    floor = results.get("floor")
    lines = [
        f"# GPU verification of a {size / 1e9:.2f} GB bf16 checkpoint (about 3.6B parameters, 2 GB shards)",
        *lines,
        "",
        "Page cache dropped before each arm; each arm ran twice, the best counts.",
        "",
        "| arm | seconds | x floor | notes |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {results[name]:.2f} | {results[name] / floor:.2f} | {notes.get(name, '')} |"
            if name in results and floor
            else f"| {name} | - | - | {notes.get(name, 'not measured')} |"
            for name in ARMS
        ),
    ]
    if floor and "weightgate" in results:
        lines += ["", f"weightgate / floor = {results['weightgate'] / floor:.2f}x (target <= 1.2x)"]
    publish_results("gpu-verify.md", lines)


if __name__ == "__main__":
    sys.exit(main())
