"""The full CPU verification of a multi-GB checkpoint, side by side with two baselines in one run:

  floor         plain parallel sha256 of the same files (hashlib, one thread per core)
  model-signing the `model-signing` package signing the directory with an EC key (hashing only)
  weightgate    `check_directory(..., smoke=False)`: sha256 + strict headers + index + config + tensor scan

and, for the time to a verdict with the smoke pass (a forward pass on the CPU):

  smoke whole     `check_directory(...)`: the model fits; the CPU runs it on the files' pages, which the
                  hashing read left in the page cache (mapped, no copy)
  smoke whole, code before
                  the baseline: the code before 2026-11-29, which copied the tensors into fresh host memory
                  during the hashing read (a memoryview copy, holding the GIL through each page fault)
  smoke whole, streams
                  the files opened as storage's objects are (no descriptor to map): the tensors are
                  copied into host memory during the hashing read, by numpy (the GIL let go)
  smoke streamed  the same as smoke whole with WEIGHTGATE_SMOKE_MAX_BYTES at a quarter of the weights:
                  the forward pass runs block by block, each block's tensors mapped from the page cache

Every arm runs in its own process (so its peak memory is its own), after its imports, on a warm
page cache; the best of three runs counts. Usage: python -m bench.verify [--gigabytes 8] [--dir DIR]
(another size than 8 GB writes its own results file, verify-cpu-SIZEgb.md).
"""

import argparse
import hashlib
import io
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
# In a results file, what follows this line (notes, earlier runs) is kept when the bench writes a new result.
KEPT_BELOW = "<!-- Written by the bench above this line; kept below it when the bench runs again. -->"
# smoke arm -> (the placement it must get, how its files are read: from the files, as streams, or as before)
SMOKE_ARMS = {
    "smoke whole": ("whole", "files"),
    "smoke whole, code before": ("whole", "before"),
    "smoke whole, streams": ("whole", "streams"),
    "smoke streamed": ("streamed", "files"),
}
ARMS = ("floor", "model-signing", "weightgate", *SMOKE_ARMS)
SHARD_BYTES = 2 * 1024**3
BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
}


def generate(directory: Path, gigabytes: float, *, unique: bool = False) -> None:
    """A LLaMA-shaped bf16 checkpoint of about `gigabytes` GB (`unique`: see write_checkpoint)."""
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    fixed = 2 * 32000 * 4096 + 4096
    write_checkpoint(
        directory,
        {**BASE_CONFIG, "num_hidden_layers": max(1, round((gigabytes * 1e9 / 2 - fixed) / per_layer))},
        unique=unique,
    )


def bf16_block(rng, values: int) -> bytes:
    """`values` bf16 numbers drawn as a trained layer's weights roughly are (normal, scale 0.02)."""
    block = rng.standard_normal(values, dtype=np.float32) * 0.02
    return (block.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def write_checkpoint(directory: Path, config: dict, shard_bytes: int = SHARD_BYTES, *, unique: bool = False) -> None:
    """The bf16 checkpoint `config` describes, written shard by shard from one reused random block; with
    `unique`, from a new block each time (slower: for uploads by Xet, which would dedup a reused block)."""
    from verification.core.tiny_llama import llama_parameter_shapes

    shapes = llama_parameter_shapes(config)
    rng = np.random.default_rng(0)
    block = bf16_block(rng, 64 * 1024 * 1024)
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 2
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape, nbytes))
        size += nbytes
    shards.append(current)
    directory.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for number, tensors in enumerate(shards, start=1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, nbytes in tensors:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = filename
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(directory / filename, "wb") as out:
            out.write(struct.pack("<Q", len(raw)) + raw)
            for _, _, nbytes in tensors:
                while nbytes:
                    piece = min(nbytes, len(block))
                    out.write(bf16_block(rng, piece // 2) if unique else block[:piece])
                    nbytes -= piece
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(config))


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


def sha256_of(path: Path) -> str:
    # 1 MiB stays in the core's cache between the read and the hash: the fastest plain loop here.
    digest, buffer = hashlib.sha256(), bytearray(1024 * 1024)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def arm_floor(directory: Path) -> None:
    with ThreadPoolExecutor(max_workers=2 * os.cpu_count()) as pool:  # as many as model-signing keeps busy
        list(pool.map(sha256_of, files_of(directory)))


def arm_model_signing(directory: Path, key: Path, signature: Path) -> None:
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=key).sign(directory, signature)


def arm_weightgate(directory: Path) -> None:
    from verification.core.checks import check_directory

    report = check_directory(directory, smoke=False)
    assert report.ok, [c.message for c in report.failures]


def weight_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in files_of(directory) if path.suffix == ".safetensors")


class UnmappedStream(io.BufferedReader):
    """A local file read as a stream from storage is: no descriptor, so nothing is mapped or read again."""

    def fileno(self):
        raise io.UnsupportedOperation("a stream from storage has no file descriptor")


def as_streams(directory: Path):
    """The checkpoint's files as the smoke pass sees objects in storage (held in host memory, never re-read)."""
    from verification.core.checks import CheckpointFile, directory_files
    from verification.core.report import Report

    return [
        CheckpointFile(item.path, item.size, lambda path=directory / item.path: UnmappedStream(io.FileIO(path)))
        for item in directory_files(directory, Report())
    ]


def arm_smoke(directory: Path, placement: str, reading: str) -> dict:
    """Every check with the smoke pass; `streamed` caps its memory at a quarter of the weights."""
    from verification.core.checks import check_directory, check_files
    from verification.core.report import Report

    if placement == "streamed":
        os.environ["WEIGHTGATE_SMOKE_MAX_BYTES"] = str(weight_bytes(directory) // 4)
    if reading == "before":
        copied_during_the_read_as_before()
    report = check_files(as_streams(directory), Report()) if reading == "streams" else check_directory(directory)
    assert report.ok, [c.message for c in report.failures]
    assert report.smoke["placement"] == placement, report.smoke
    return {key: report.smoke.get(key) for key in ("placement", "held_bytes_peak", "blocks", "reread_from_files")}


def copied_during_the_read_as_before() -> None:
    """The baseline, the code before 2026-11-29: a CPU's whole model copied into fresh host memory during
    the hashing read, each piece by a memoryview copy (which holds the GIL through its page faults)."""
    import torch

    from verification.core import loading, model_checks

    def write(sink, name: str, offset: int, piece: memoryview) -> None:
        memoryview(sink.host_arrays[name])[offset : offset + len(piece)] = piece

    model_checks.sink_for = lambda placement, files: loading.TensorSink(
        torch.device(placement.device), placement=placement
    )
    loading.TensorSink.write = write


def run_arm(name: str, directory: Path) -> dict:
    """Runs in a child process: import, then time the arm alone."""
    if name == "model-signing":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        scratch = Path(tempfile.mkdtemp())
        key = scratch / "key.pem"
        key.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        import model_signing.signing  # noqa: F401

        action = lambda: arm_model_signing(directory, key, scratch / "model.sig")  # noqa: E731
    elif name in ("weightgate", *SMOKE_ARMS):
        from verification.core.model_checks import expected_parameters
        from verification.core.tiny_llama import TINY_LLAMA_CONFIG

        # A worker pays for importing torch and transformers' model code once, not per checkpoint.
        expected_parameters(TINY_LLAMA_CONFIG)
        if name == "weightgate":
            action = lambda: arm_weightgate(directory)  # noqa: E731
        else:
            action = lambda: arm_smoke(directory, *SMOKE_ARMS[name])  # noqa: E731
    else:
        action = lambda: arm_floor(directory)  # noqa: E731
    started = time.perf_counter()
    smoke = action()
    seconds = time.perf_counter() - started
    return {"arm": name, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "smoke": smoke}


def peak_rss_mb() -> float:
    """This process's own high-water mark (ru_maxrss would carry the parent's over from fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, directory: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "bench.verify", "--arm", name, "--dir", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.verify")
    parser.add_argument("--gigabytes", type=float, default=8.0)
    parser.add_argument("--dir", type=Path, default=Path("var/bench/checkpoint"))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.dir)))
        return
    generated_once(args.dir, args.gigabytes, generate)
    size = sum(p.stat().st_size for p in files_of(args.dir))
    arm_floor(args.dir)  # warm the page cache so every arm reads the same way
    load_before = os.getloadavg()[0]  # a shared machine's other work shows in the timings
    best = {}
    for _ in range(3):
        for name in ARMS:
            result = measure(name, args.dir)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    floor = best["floor"]["seconds"]
    lines = [
        f"# CPU verification of a {size / 1e9:.2f} GB bf16 checkpoint ({len(files_of(args.dir))} files)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, warm page cache; "
        "best of 3 runs per arm, each in its own process after its imports; "
        f"load average {load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} after",
        "",
        "| arm | seconds | GB/s | x floor | peak RSS MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("floor", "model-signing", "weightgate"):
        result = best[name]
        lines.append(
            f"| {name} | {result['seconds']:.2f} | {size / result['seconds'] / 1e9:.2f} | "
            f"{result['seconds'] / floor:.2f} | {result['peak_rss_mb']:.0f} |"
        )
    weightgate = best["weightgate"]["seconds"]
    lines += [
        "",
        f"weightgate / floor = {weightgate / floor:.2f}x (target <= 1.25x); "
        f"weightgate / model-signing = {weightgate / best['model-signing']['seconds']:.2f}x (target < 1); "
        f"peak {best['weightgate']['peak_rss_mb']:.0f} MB (target < 512 MB)",
        *smoke_lines(best, weight_bytes(args.dir)),
    ]
    publish_results("verify-cpu.md" if args.gigabytes == 8.0 else f"verify-cpu-{args.gigabytes:g}gb.md", lines)


def smoke_lines(best: dict, weights: int) -> list[str]:
    """Time to a verdict with the smoke pass: streamed at a quarter of the weights against the whole model."""
    whole = best["smoke whole"]["seconds"]
    lines = [
        "",
        f"Time to a verdict with the smoke pass (a forward pass of 8 tokens on the CPU); the streamed arm "
        f"may use {weights // 4 / 2**20:.0f} MiB, a quarter of the weights:",
        "",
        "| arm | seconds | x smoke whole | peak RSS MB | placement | weights on the CPU at once MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in SMOKE_ARMS:
        result, smoke = best[name], best[name]["smoke"]
        lines.append(
            f"| {name} | {result['seconds']:.2f} | {result['seconds'] / whole:.2f} | {result['peak_rss_mb']:.0f} | "
            f"{smoke['placement']}{' (from the files)' if smoke.get('reread_from_files') else ''} | "
            f"{smoke['held_bytes_peak'] / 2**20:.0f} |"
        )
    streamed = best["smoke streamed"]["seconds"]
    lines += [
        "",
        f"smoke streamed / smoke whole = {streamed / whole:.2f}x (target <= 1.3x); smoke whole / the code before = "
        f"{whole / best['smoke whole, code before']['seconds']:.2f}x; streams / the code before = "
        f"{best['smoke whole, streams']['seconds'] / best['smoke whole, code before']['seconds']:.2f}x",
        "",
        "The whole and streamed arms keep nothing during the hashing read and run on the files' pages in the",
        "page cache (mapped, no copy; the streamed one a block at a time). The streams arm copies every weight",
        "into fresh memory during the hashing read, as a CPU worker must for objects in S3, and the code before",
        "did for every file (with a copy that held the GIL through each page fault).",
    ]
    return lines


def generated_once(directory: Path, gigabytes: float, generate) -> None:
    """`generate(directory, gigabytes)` unless an earlier run did (a marker beside it names the size; inside,
    the checks would refuse it as a kind of file a model repo does not hold)."""
    marker = directory.parent / f".{directory.name}.generated-{gigabytes}"
    if not marker.exists():
        print(f"generating a {gigabytes:g} GB checkpoint in {directory} …", flush=True)
        generate(directory, gigabytes)
        marker.touch()


def publish_results(filename: str, lines: list[str]) -> None:
    """Print the result and keep it in bench/results/ beside the earlier ones: the file's notes (what follows
    KEPT_BELOW) stay below the new result; a file from before the marker is kept whole under a heading."""
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / filename
    earlier = path.read_text() if path.exists() else ""
    if KEPT_BELOW in earlier:
        kept = earlier.split(KEPT_BELOW, 1)[1].strip("\n")
    elif earlier.strip():
        kept = f"## Before this run (the file as it was)\n\n{earlier.strip()}"
    else:
        kept = ""
    path.write_text(f"{text}\n\n{KEPT_BELOW}\n" + (f"\n{kept}\n" if kept else ""))


if __name__ == "__main__":
    main()
