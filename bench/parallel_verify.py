"""Verification shared out between verify workers: the time to the verdict of the CPU checks (every file
hashed, parsed and scanned, then the whole checkpoint judged) with 1 worker, side by side with N, in one
run, and the scaling efficiency T1 / (N x TN). The smoke pass is left out: it runs on the GPU queue
(bench.gpu_verify measures it).

Each arm publishes the same checkpoint again (local storage, warm page cache), starts N Celery worker
processes on the `verify` queue (one task at a time each, as `make run` starts them), sends
`verify_revision` and waits for the revision to leave the checks. With --database-url it runs on
PostgreSQL, else on the embedded SQLite database; the broker is the embedded one.

Usage: python -m bench.parallel_verify [--workers 1,4,8] [--shards 16] [--shard-megabytes 256]
Target: an efficiency of at least 0.7 at 8 workers (on a machine with at least 8 cores).
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.verify import BASE_CONFIG, publish_results, write_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent


def checkpoint_config(shards: int, shard_megabytes: int) -> dict:
    """A LLaMA-shaped bf16 config of about `shards` x `shard_megabytes` MB, one decoder layer per shard."""
    hidden = 1024
    intermediate = max(256, (shard_megabytes * 1024 * 1024 // 2 - 4 * hidden * hidden) // (3 * hidden))
    return {
        **BASE_CONFIG,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "num_hidden_layers": shards,
        "vocab_size": 8192,
    }


def environment(var_dir: Path, database_url: str) -> dict[str, str]:
    env = {**os.environ, "WEIGHTGATE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"}
    env.pop("CELERY_BROKER_URL", None)  # the embedded broker, in var_dir
    env.pop("S3_BUCKET", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    from workers.celery import worker_command

    processes = []
    for number in range(count):
        log = (logs / f"worker-{number}.log").open("wb")
        command = worker_command("verify", f"bench-{number}@%h")
        processes.append(
            subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    deadline = time.monotonic() + 120
    while not all(b" ready." in (logs / f"worker-{n}.log").read_bytes() for n in range(count)):
        if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
            raise RuntimeError(f"the workers did not start; see {logs}")
        time.sleep(0.2)
    return processes


def stop_workers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        os.killpg(process.pid, 15)
    for process in processes:
        process.wait(timeout=30)


def timed_checks(checkpoint: Path, count: int, env: dict[str, str], logs: Path) -> tuple[float, float]:
    """(seconds until every file is checked, seconds until the checkpoint is judged), from the dispatch."""
    from django.utils import timezone

    from distribution.models import Revision
    from distribution.publishing import publish_checkpoint
    from verification.tasks import verify_revision

    revision = publish_checkpoint(checkpoint, f"bench/parallel-{count}", storage_backend="local").revision
    processes = start_workers(count, env, logs)
    try:
        sent = timezone.now()
        verify_revision.delay(revision.pk)
        while True:
            revision.refresh_from_db()
            if revision.state == Revision.State.FAILED:
                raise RuntimeError(f"the checks failed: {revision.failure_reason}")
            if revision.verification_stage == Revision.Stage.SMOKE_QUEUED:
                break
            time.sleep(0.05)
    finally:
        stop_workers(processes)
    last_file = max(revision.file_checks.values_list("finished_at", flat=True))
    judged = revision.runs.get().started_at
    return (last_file - sent).total_seconds(), (judged - sent).total_seconds()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel_verify")
    parser.add_argument("--workers", default="1,4,8", help="worker counts, the first is the baseline")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--shard-megabytes", type=int, default=256)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--results", default="parallel-verify-cpu.md", help="file name in bench/results/")
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="weightgate-parallel-"))
    try:
        env = environment(work / "var", args.database_url)
        os.environ.update({key: env[key] for key in ("WEIGHTGATE_VAR_DIR", "DJANGO_SETTINGS_MODULE")})
        if args.database_url:
            os.environ["DATABASE_URL"] = args.database_url
        import django
        from django.conf import settings
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        checkpoint = work / "checkpoint"
        shard_bytes = args.shard_megabytes * 1024 * 1024
        write_checkpoint(checkpoint, checkpoint_config(args.shards, args.shard_megabytes), shard_bytes)
        size = sum(path.stat().st_size for path in checkpoint.iterdir())
        files = len(list(checkpoint.iterdir()))
        seconds, verdict = {}, {}
        for count in counts:
            logs = work / f"logs-{count}"
            logs.mkdir()
            seconds[count], verdict[count] = timed_checks(checkpoint, count, env, logs)
            # Each arm publishes its own copy: 16 GB shards three times would fill a 64 GiB disk.
            shutil.rmtree(settings.LOCAL_STORAGE_ROOT, ignore_errors=True)
            print(f"{count} worker(s): files {seconds[count]:.2f} s, verdict {verdict[count]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline = counts[0]
    lines = [
        f"# Verification shared out between workers: {size / 1e9:.2f} GB in {files} files ({args.shards} shards)",
        f"machine: {platform.machine()}, {os.cpu_count()} cores; database: "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}; embedded broker; warm page cache",
        "from sending verify_revision: until every file is checked (the part shared out), and until the",
        "whole checkpoint is judged (by one worker; each loads the model code as it starts). No smoke pass.",
        "",
        f"| workers | files checked (s) | GB/s | speed-up over {baseline} | efficiency | verdict (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for count in counts:
        speedup = seconds[baseline] / seconds[count]
        lines.append(
            f"| {count} | {seconds[count]:.2f} | {size / 1e9 / seconds[count]:.2f} | {speedup:.2f}x "
            f"| {speedup * baseline / count:.2f} | {verdict[count]:.2f} |"
        )
    widest = counts[-1]
    lines += [
        "",
        f"efficiency at {widest} workers = {seconds[baseline] * baseline / (widest * seconds[widest]):.2f} "
        "(target >= 0.7 at 8 workers, on a machine with at least 8 cores)",
    ]
    publish_results(args.results, lines)


if __name__ == "__main__":
    main(sys.argv[1:])
