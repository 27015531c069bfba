"""The full CPU verification of a multi-GB checkpoint, side by side with two baselines in one run:

  floor         plain parallel sha256 of the same files (hashlib, one thread per core)
  model-signing the `model-signing` package signing the directory with an EC key (hashing only)
  weightgate    `check_directory(..., smoke=False)`: sha256 + strict headers + index + config + tensor scan

Every arm runs in its own process (so its peak memory is its own), after its imports, on a warm
page cache; the best of two runs counts. Usage: python -m bench.verify [--gigabytes 8] [--dir DIR]
"""

import argparse
import hashlib
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


def generate(directory: Path, gigabytes: float) -> None:
    """A LLaMA-shaped bf16 checkpoint of about `gigabytes` GB."""
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    fixed = 2 * 32000 * 4096 + 4096
    write_checkpoint(
        directory, {**BASE_CONFIG, "num_hidden_layers": max(1, round((gigabytes * 1e9 / 2 - fixed) / per_layer))}
    )


def write_checkpoint(directory: Path, config: dict, shard_bytes: int = SHARD_BYTES) -> None:
    """The bf16 checkpoint `config` describes, written shard by shard from one reused random block."""
    from verification.core.tiny_llama import llama_parameter_shapes

    shapes = llama_parameter_shapes(config)
    block = np.random.default_rng(0).standard_normal(64 * 1024 * 1024, dtype=np.float32) * 0.02
    block = (block.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # bf16 bits
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
                    out.write(block[:piece])
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
    elif name == "weightgate":
        from verification.core.model_checks import expected_parameters
        from verification.core.tiny_llama import TINY_LLAMA_CONFIG

        # A worker pays for importing torch and transformers' model code once, not per checkpoint.
        expected_parameters(TINY_LLAMA_CONFIG)
        action = lambda: arm_weightgate(directory)  # noqa: E731
    else:
        action = lambda: arm_floor(directory)  # noqa: E731
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    return {"arm": name, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


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
    parser.add_argument("--arm", choices=["floor", "model-signing", "weightgate"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.dir)))
        return
    generated_once(args.dir, args.gigabytes, generate)
    size = sum(p.stat().st_size for p in files_of(args.dir))
    arm_floor(args.dir)  # warm the page cache so every arm reads the same way
    best = {}
    for _ in range(3):
        for name in ("floor", "model-signing", "weightgate"):
            result = measure(name, args.dir)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    floor = best["floor"]["seconds"]
    lines = [
        f"# CPU verification of a {size / 1e9:.2f} GB bf16 checkpoint ({len(files_of(args.dir))} files)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, warm page cache; "
        "best of 3 runs per arm, each in its own process after its imports",
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
    ]
    publish_results("verify-cpu.md", lines)


def generated_once(directory: Path, gigabytes: float, generate) -> None:
    """`generate(directory, gigabytes)` unless an earlier run did (a marker file names the size)."""
    marker = directory / f".generated-{gigabytes}"
    if not marker.exists():
        print(f"generating a {gigabytes:g} GB checkpoint in {directory} …", flush=True)
        generate(directory, gigabytes)
        marker.touch()


def publish_results(filename: str, lines: list[str]) -> None:
    """Print the result and keep it in bench/results/ beside the earlier ones."""
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / filename).write_text(text + "\n")


if __name__ == "__main__":
    main()
