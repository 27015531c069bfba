"""Publishing a multi-GB checkpoint to S3 (SeaweedFS on this machine), side by side with boto3 in one run:

  boto3          `upload_file` for each file, one after the other, TransferConfig with the portal's
                 part size and PUBLISH_CONCURRENCY parts in flight: the same parallelism
  weightgate     `publish_checkpoint` (a draft, its file rows and audit events, then the files, several
                 at once and in parts, and the move to `uploaded`)
  weightgate-sha256  the same with `--expect-sha256`: every file hashed in the same read that sends it

The shards' bodies are random bytes behind a valid safetensors header: the files are not verified here,
only sent. Every arm runs in its own process after Django is set up, on a warm page cache, into a fresh
prefix; the best of the rounds counts. Usage: python -m bench.publish [--gigabytes 4] [--rounds 2]
Target: weightgate at least 0.9x boto3's rate.
"""

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.download import manage
from bench.verify import generated_once, publish_results, sha256_of
from tests.support.servers import s3_client, start_seaweedfs, stop_process, wait_for_bucket

ROOT = Path(__file__).resolve().parent.parent
SHARD_BYTES = 1024**3
ARMS = ("boto3", "weightgate", "weightgate-sha256")


def generate(directory: Path, gigabytes: float) -> None:
    """Shards of SHARD_BYTES (the last one shorter), each one U8 tensor of random bytes, and a config."""
    directory.mkdir(parents=True, exist_ok=True)
    rng, remaining = np.random.default_rng(0), int(gigabytes * 1e9)
    count = -(-remaining // SHARD_BYTES)
    for number in range(1, count + 1):
        body = min(SHARD_BYTES, remaining)
        remaining -= body
        header = json.dumps({"weight": {"dtype": "U8", "shape": [body], "data_offsets": [0, body]}}).encode()
        header += b" " * (-len(header) % 8)
        with open(directory / f"model-{number:05d}-of-{count:05d}.safetensors", "wb") as out:
            out.write(struct.pack("<Q", len(header)) + header)
            while body:
                piece = min(body, 64 * 1024 * 1024)
                out.write(rng.bytes(piece))
                body -= piece
    (directory / "config.json").write_text(json.dumps({"model_type": "bench", "note": "random bytes"}))


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


def run_arm(name: str, directory: Path, run: str) -> dict:
    """In a child process: set Django up, then time the arm alone."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from boto3.s3.transfer import TransferConfig
    from django.conf import settings

    from distribution.publishing import publish_checkpoint
    from distribution.storage import get_storage

    storage = get_storage("s3")
    if name == "boto3":
        config = TransferConfig(
            multipart_threshold=storage.part_size,
            multipart_chunksize=storage.part_size,
            max_concurrency=settings.PUBLISH_CONCURRENCY,
        )

        def action():
            for path in files_of(directory):
                storage.client.upload_file(str(path), storage.bucket, f"bench/{run}/{path.name}", Config=config)

    else:
        sums = directory.parent / "SHA256SUMS" if name == "weightgate-sha256" else None

        def action():
            publish_checkpoint(directory, f"bench/{run}", storage_backend="s3", expect_sha256=sums)

    started, cpu = time.perf_counter(), time.process_time()
    action()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "arm": name,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "part_mib": storage.part_size // 1024**2,
        "in_flight": storage.concurrency,
    }


def measure(name: str, directory: Path, run: str, env: dict) -> dict:
    command = [sys.executable, "-m", "bench.publish", "--arm", name, "--dir", str(directory), "--run", run]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(output.stdout.strip().splitlines()[-1])


def empty_bucket(client, bucket: str) -> None:
    """Each arm writes into an empty bucket, so none pays for another's objects."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def compare(directory: Path, rounds: int, scratch: Path) -> dict:
    weed_dir = scratch / "seaweedfs"
    weed_dir.mkdir()
    # Room for every arm's copies: SeaweedFS frees deleted bytes only when it compacts its volumes.
    needed = int(len(ARMS) * rounds * sum(p.stat().st_size for p in files_of(directory)) / 1e9) + 8
    weed, endpoint = start_seaweedfs(weed_dir, volume_mb=1024, volumes=needed)
    try:
        wait_for_bucket(weed, endpoint, weed_dir)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WEIGHTGATE_REQUIRE"))},
            **endpoint.env(),
            "WEIGHTGATE_VAR_DIR": str(scratch / "var"),
        }
        manage(env, "migrate", "--verbosity=0")
        client, best = s3_client(endpoint), {}
        for round_number in range(rounds):
            for name in ARMS if round_number % 2 == 0 else reversed(ARMS):
                empty_bucket(client, endpoint.bucket)
                result = measure(name, directory, f"{name}-{round_number}", env)
                print(f"  {name}: {result['seconds']:.2f} s, {result['cpu_seconds']:.2f} s of CPU", flush=True)
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
        return best
    finally:
        stop_process(weed)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish")
    parser.add_argument("--gigabytes", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("var/bench/publish/checkpoint"))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dir = args.dir.resolve()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.dir, args.run)))
        return
    generated_once(args.dir, args.gigabytes, generate)
    files = files_of(args.dir)
    size = sum(p.stat().st_size for p in files)
    # The digests the training cluster would have written; computing them also warms the page cache.
    sums = "".join(f"{sha256_of(p)}  {p.name}\n" for p in files)
    (args.dir.parent / "SHA256SUMS").write_text(sums)
    with tempfile.TemporaryDirectory(dir=args.dir.parent) as scratch:
        best = compare(args.dir, args.rounds, Path(scratch))
    boto3_seconds = best["boto3"]["seconds"]
    lines = [
        f"# Publishing a {size / 1e9:.2f} GB checkpoint ({len(files)} files) to S3 (SeaweedFS on the same machine)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; parts of "
        f"{best['boto3']['part_mib']} MiB, {best['boto3']['in_flight']} in flight in every arm; "
        f"warm page cache; best of {args.rounds} runs per arm, each in its own process after Django's set-up",
        "",
        "| arm | seconds | MB/s | x boto3's rate | CPU seconds of the publishing process |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ARMS:
        seconds, cpu = best[name]["seconds"], best[name]["cpu_seconds"]
        lines.append(
            f"| {name} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {boto3_seconds / seconds:.2f} | {cpu:.2f} |"
        )
    lines += [
        "",
        f"weightgate = {boto3_seconds / best['weightgate']['seconds']:.2f}x boto3 upload_file's rate (target >= 0.9x); "
        f"with --expect-sha256 (one read: sent and hashed) {boto3_seconds / best['weightgate-sha256']['seconds']:.2f}x",
    ]
    publish_results("publish.md", lines)


if __name__ == "__main__":
    main()
