"""On a machine with an NVIDIA GPU: full verification with smoke inference against the floor.

One prepared run (python -m bench.gpu_verify [--dir DIR]) that generates a LLaMA-shaped checkpoint of
about 3.6B parameters (bf16, 2 GB shards) and, dropping the page cache before each arm, times:

  floor       reading every shard once (threads, 1 MiB reads, bytes discarded)
  naive       a sha256 pass, then transformers' from_pretrained to the GPU, an isfinite scan of every
              parameter and a forward pass
  weightgate  `check_directory(DIR)`: hashes, strict headers, index, config, tensor scan and the smoke
              pass on the GPU, with each shard read once (the tensors go to the GPU from that read)

Prints the ratios and writes them to bench/results/gpu-verify.md. Needs root for drop_caches.
"""

import argparse
import os
import subprocess
import sys
import time
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


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


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


def arm_weightgate(directory: Path) -> dict:
    import torch

    from verification.checks import check_directory

    report = check_directory(directory)
    torch.cuda.synchronize()
    assert report.ok, [c.message for c in report.failures]
    return {"smoke": report.smoke}


ARMS = {"floor": arm_floor, "naive": arm_naive, "weightgate": arm_weightgate}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_verify")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/weightgate-gpu-bench"))
    args = parser.parse_args()
    import torch
    import transformers  # noqa: F401  (imports are start-up cost, not verification)

    from verification.model_checks import expected_parameters
    from verification.tiny_llama import TINY_LLAMA_CONFIG

    assert torch.cuda.is_available(), "this benchmark needs an NVIDIA GPU"
    expected_parameters(TINY_LLAMA_CONFIG)  # load transformers' model code once, as a running worker has
    torch.zeros(1, device="cuda")  # create the CUDA context outside the timings
    if not (args.dir / "config.json").exists():
        started = time.perf_counter()
        write_checkpoint(args.dir, CONFIG_3_6B)
        print(f"generated {args.dir} in {time.perf_counter() - started:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in files_of(args.dir))
    results = {}
    for name in ("floor", "naive", "weightgate", "floor"):
        drop_page_cache()
        started = time.perf_counter()
        extra = ARMS[name](args.dir)
        seconds = time.perf_counter() - started
        results[name] = min(seconds, results.get(name, float("inf")))
        print(f"{name}: {seconds:.2f} s {extra}", flush=True)
        torch.cuda.empty_cache()
    floor = results["floor"]
    lines = [
        f"# GPU verification of a {size / 1e9:.2f} GB bf16 checkpoint (about 3.6B parameters, 2 GB shards)",
        f"machine: {torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores; page cache dropped before each arm",
        "",
        "| arm | seconds | x floor |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {results[name]:.2f} | {results[name] / floor:.2f} |"
            for name in ("floor", "naive", "weightgate")
        ),
        "",
        f"weightgate / floor = {results['weightgate'] / floor:.2f}x (target <= 1.2x)",
    ]
    publish_results("gpu-verify.md", lines)


if __name__ == "__main__":
    sys.exit(main())
