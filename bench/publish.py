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

`--hub` compares the Hub client's upload_folder with boto3 instead, and times the verdict on a commit that
changes one shard against a full verification (see below; bench/results/publish_hub.md). `--hub --gigabytes
G` compares both at release size, on a checkpoint of which no block repeats (bench/results/publish_hub_large.md).
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
from bench.verify import files_of, generated_once, publish_results, sha256_of
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
    parser.add_argument(
        "--gigabytes", type=float, help="the checkpoint's size (default 4; with --hub: LFS at that size)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("var/bench/publish/checkpoint"))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--hub", action="store_true", help="the Hub client's upload_folder against boto3 (LFS)")
    parser.add_argument("--hub-arm", choices=HUB_ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--hub-verdicts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--retrained", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.gigabytes_given, args.gigabytes = args.gigabytes is not None, args.gigabytes or 4.0
    args.dir = args.dir.resolve()
    if args.hub_arm:
        print(json.dumps(hub_arm(args.hub_arm, args.dir, args.run, args.endpoint, args.token)))
        return
    if args.hub_verdicts:
        print(json.dumps(hub_verdicts(args.dir, args.retrained, args.endpoint, args.token)))
        return
    if args.hub:
        if args.gigabytes_given:
            hub_large_main(args)
        else:
            hub_main(args)
        return
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


# --- Publishing with the Hub client (python -m bench.publish --hub) ------------------------------------
#
#   boto3        each file by `upload_file` into SeaweedFS, as many files at once as the Hub client sends
#                (HUB_THREADS), each one's parts one after the other as the client sends them: the same
#                parallelism, the same part size
#   hub          `HfApi.upload_folder` against the portal under gunicorn: preupload, the LFS batch, every part
#                PUT straight to SeaweedFS by its presigned link, each object read back and hashed by the
#                portal at its completion call, then the commit (its files refer to the uploads in place)
#   xet          the same call as the client is installed (hf_xet on, a cache of its own per run): chunks
#                and xorbs POSTed to the portal, which keeps them and rebuilds each file from them at the
#                shard upload, hashing it, then the commit
#
# Then the verdicts: the checkpoint committed whole and verified in full, then committed again with one
# shard retrained (upload_folder of that shard alone), whose other files' checks are reused.

HUB_THREADS = 5  # the files create_commit uploads at once (its num_threads)
HUB_ARMS = ("boto3", "hub", "xet")
# A LLaMA of about 300 MB in four shards: a checkpoint of real tensors, so that it verifies.
HUB_MODEL = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "vocab_size": 16000,
}


def hub_arm(name: str, directory: Path, run: str, endpoint: str, token: str) -> dict:
    """In a child process: time one arm alone."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from concurrent.futures import ThreadPoolExecutor

    from boto3.s3.transfer import TransferConfig

    from distribution.storage import get_storage

    storage = get_storage("s3")
    started = time.perf_counter()
    if name == "boto3":
        config = TransferConfig(
            multipart_threshold=storage.part_size, multipart_chunksize=storage.part_size, max_concurrency=1
        )

        def send(path: Path) -> None:
            storage.client.upload_file(str(path), storage.bucket, f"bench/{run}/{path.name}", Config=config)

        with ThreadPoolExecutor(HUB_THREADS) as pool:
            list(pool.map(send, files_of(directory)))
    else:
        from huggingface_hub import HfApi

        from distribution.models import Revision

        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(f"bench/{run}", exist_ok=True)
        commit = api.upload_folder(repo_id=f"bench/{run}", folder_path=directory, ignore_patterns=".*").oid
        uploaded = time.perf_counter() - started
        # By Xet the client is done once its xorbs are stored; the worker then rebuilds the files from them.
        while Revision.objects.get(commit=commit).state == Revision.State.ASSEMBLING:
            time.sleep(0.05)
        return {
            "arm": name,
            "seconds": uploaded,
            "accepted_seconds": time.perf_counter() - started,
            "part_mib": storage.part_size // 1024**2,
        }
    return {"arm": name, "seconds": time.perf_counter() - started, "part_mib": storage.part_size // 1024**2}


def hub_verdicts(directory: Path, retrained: Path, endpoint: str, token: str) -> dict:
    """In a child process: the seconds to a verdict of the whole checkpoint, and of it changed in one shard."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from huggingface_hub import HfApi

    from distribution.models import Revision
    from verification.models import FileCheck
    from verification.services import run_checks_stage, run_smoke_stage

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo("bench/verdicts", exist_ok=True)
    changed = sorted(p.name for p in retrained.glob("*.safetensors"))[-1]
    timings = {}
    for label, folder, patterns in (("whole", directory, None), ("one shard changed", retrained, [changed])):
        commit = api.upload_folder(
            repo_id="bench/verdicts", folder_path=folder, allow_patterns=patterns, ignore_patterns=".*"
        ).oid
        revision = Revision.objects.get(commit=commit)
        started = time.perf_counter()
        run_checks_stage(revision.pk)
        run_smoke_stage(revision.pk)
        revision.refresh_from_db()
        assert revision.state == Revision.State.VERIFIED, revision.failure_reason
        read = FileCheck.objects.filter(revision=revision, claims__gt=0)
        timings[label] = {
            "seconds": time.perf_counter() - started,
            "files_read": read.count(),
            "bytes_read": sum(read.values_list("size", flat=True)),
        }
    return timings


def hub_compare(
    directory: Path, retrained: Path | None, rounds: int, scratch: Path, arms=HUB_ARMS
) -> tuple[dict, dict | None]:
    from tests.support.servers import start_gunicorn, start_worker

    weed_dir = scratch / "seaweedfs"
    weed_dir.mkdir()
    size = sum(p.stat().st_size for p in files_of(directory))
    weed, s3 = start_seaweedfs(weed_dir, volume_mb=1024, volumes=int(6 * rounds * size / 1e9) + 8)
    gunicorn = worker = None
    try:
        wait_for_bucket(weed, s3, weed_dir)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WEIGHTGATE_REQUIRE"))},
            **s3.env(),
            "WEIGHTGATE_VAR_DIR": str(scratch / "var"),
            "STORAGE_BACKEND": "s3",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        manage(env, "migrate", "--verbosity=0")
        account = ["create_account", "bench", "--email", "bench@example.org", "--staff", "--print-token"]
        created = subprocess.run(
            [sys.executable, "manage.py", *account], capture_output=True, text=True, check=True, cwd=ROOT, env=env
        )
        token = created.stdout.strip().splitlines()[-1]
        gunicorn, base = start_gunicorn(env, scratch / "gunicorn.log")
        # The worker that rebuilds the files sent by Xet from their xorbs (the default queue), as `make run` has.
        worker = start_worker(env, scratch / "worker.log", "default", name="bench")
        client, best = s3_client(s3), {}
        for round_number in range(rounds):
            for name in arms if round_number % 2 == 0 else reversed(arms):
                command = [sys.executable, "-m", "bench.publish", "--hub-arm", name, "--dir", str(directory)]
                command += ["--run", f"{name}-{round_number}", "--endpoint", base, "--token", token]
                # only the xet arm uploads by Xet, remembering nothing from an earlier run
                arm_env = {**env, "HF_HUB_DISABLE_XET": "", "HF_XET_CACHE": str(scratch / f"xet-{round_number}")}
                arm_env = arm_env if name == "xet" else env
                output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=arm_env)
                result = json.loads(output.stdout.strip().splitlines()[-1])
                print(f"  {name}: {result['seconds']:.2f} s", flush=True)
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
        empty_bucket(client, s3.bucket)
        if retrained is None:
            return best, None
        command = [sys.executable, "-m", "bench.publish", "--hub-verdicts", "--dir", str(directory)]
        command += ["--retrained", str(retrained), "--endpoint", base, "--token", token]
        output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        return best, json.loads(output.stdout.strip().splitlines()[-1])
    finally:
        for process in (gunicorn, worker):
            if process is not None:
                stop_process(process)
        stop_process(weed)


def hub_large_main(args) -> None:
    """`--hub --gigabytes G`: the LFS and Xet arms against boto3 at release size, and the verdicts on that
    checkpoint (bench.verify's bf16 LLaMA of G GB, in 2 GiB shards, no block of it repeated: Xet would send a
    repeated block once)."""
    from bench.verify import generate as generate_llama

    directory = args.dir.parent / f"hub-llama-{args.gigabytes:g}-unique"
    retrained = args.dir.parent / f"hub-llama-{args.gigabytes:g}-unique-retrained"
    generated_once(directory, args.gigabytes, lambda folder, size: generate_llama(folder, size, unique=True))
    if not retrained.exists():
        retrain_last_shard(directory, retrained)
    hub_report(
        args,
        directory,
        retrained,
        "publish_hub_large.md",
        title=lambda size, count: f"at release size: {size / 1e9:.2f} GB ({count} files)",
        setting="runs per arm in turns, each in its own process; the portal under gunicorn (the shipped config) "
        "with SQLite; a bf16 LLaMA of hidden 4096 (bench.verify's)",
        lfs_arm="LFS multipart, presigned parts, each object read back in ranges and hashed at completion, commit",
    )


def xet_lines(xet: dict, size: int, boto3_seconds: float) -> list[str]:
    """The Xet arm's rows: until the client returns (its xorbs stored, its commit waiting), and until the
    worker has rebuilt every file from them and the revision holds it (the best run's own time)."""
    rows = []
    for what, seconds in (
        ("HfApi.upload_folder as installed (Xet: xorbs to the portal; until the client returns)", xet["seconds"]),
        ("... until the worker has rebuilt and hashed every file (the revision uploaded)", xet["accepted_seconds"]),
    ):
        rows.append(f"| {what} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {boto3_seconds / seconds:.2f} |")
    return rows


def retrain_last_shard(directory: Path, retrained: Path) -> None:
    """The checkpoint's last shard with the lowest bit of each of its first 16 Mi bf16 values flipped (every
    value stays finite, the shard's sha256 changes), alone in `retrained`: the commit of a retrained shard."""
    shard = sorted(directory.glob("*.safetensors"))[-1]
    retrained.mkdir(parents=True)
    data = bytearray(shard.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    values = np.frombuffer(data, dtype=np.uint16, count=min(16 * 2**20, (len(data) - start) // 2), offset=start)
    values ^= 1
    (retrained / shard.name).write_bytes(data)


def verdict_lines(verdicts: dict) -> list[str]:
    whole, changed = verdicts["whole"], verdicts["one shard changed"]
    return [
        "## Time to a verdict (checks and smoke pass, in one process)",
        "",
        "| commit | seconds | files read by the per-file checks | bytes read |",
        "| --- | --- | --- | --- |",
        f"| the whole checkpoint | {whole['seconds']:.2f} | {whole['files_read']} | {whole['bytes_read']} |",
        f"| one shard retrained | {changed['seconds']:.2f} | {changed['files_read']} | {changed['bytes_read']} |",
        "",
        f"one shard changed: {changed['seconds'] / whole['seconds']:.2f}x the time of the full verification "
        "(the smoke pass still loads every shard, hashing it again as it loads)",
    ]


def hub_main(args) -> None:
    from verification.core.tiny_llama import write_tiny_llama

    directory, retrained = args.dir.parent / "hub-checkpoint", args.dir.parent / "hub-retrained"
    if not directory.exists():
        write_tiny_llama(directory, shards=4, config_overrides=HUB_MODEL)
        write_tiny_llama(retrained, shards=4, seed=1, config_overrides=HUB_MODEL)
    hub_report(
        args,
        directory,
        retrained,
        "publish_hub.md",
        title=lambda size, count: f"a {size / 1e6:.0f} MB checkpoint ({count} files)",
        setting="runs per arm, each in its own process; the portal under gunicorn (the shipped config) with SQLite",
        lfs_arm="LFS multipart, presigned parts, hashed at completion, commit",
    )


def hub_report(args, directory: Path, retrained: Path, results: str, *, title, setting: str, lfs_arm: str) -> None:
    """The Hub client's arms against boto3 on `directory`, and the verdicts on it and `retrained`, into `results`."""
    files = files_of(directory)
    size = sum(p.stat().st_size for p in files)
    for path in files:
        sha256_of(path)  # a warm page cache for every arm
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        best, verdicts = hub_compare(directory, retrained, args.rounds, Path(scratch))
    boto3_seconds, hub_seconds, xet_seconds = (best[arm]["seconds"] for arm in HUB_ARMS)
    lines = [
        f"# Publishing with the Hub client: {title(size, len(files))} to S3 (SeaweedFS on the same machine)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; parts of "
        f"{best['boto3']['part_mib']} MiB; {HUB_THREADS} files at once, each one's parts in turn, in both arms; "
        f"warm page cache; best of {args.rounds} {setting}",
        "",
        "| arm | seconds | MB/s | x boto3's rate |",
        "| --- | --- | --- | --- |",
        f"| boto3 upload_file | {boto3_seconds:.2f} | {size / boto3_seconds / 1e6:.0f} | 1.00 |",
        f"| HfApi.upload_folder ({lfs_arm}) | {hub_seconds:.2f} | {size / hub_seconds / 1e6:.0f} "
        f"| {boto3_seconds / hub_seconds:.2f} |",
        *xet_lines(best["xet"], size, boto3_seconds),
        "",
        f"upload_folder = {boto3_seconds / hub_seconds:.2f}x boto3's rate by LFS, "
        f"{boto3_seconds / xet_seconds:.2f}x by Xet (target >= 0.8x)",
        "",
        *verdict_lines(verdicts),
    ]
    publish_results(results, lines)


if __name__ == "__main__":
    main()
