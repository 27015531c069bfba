"""Serving a traceable file from local storage against the same untraced file, as people meet it, in one run:

  the portal runs as shipped (gunicorn with deploy/gunicorn.conf.py), alone and behind Debian's nginx with
  the shipped site (deploy/nginx/weightgate.conf, X_ACCEL_REDIRECT_PREFIX=/protected/). A bf16 LLaMA of
  about --megabytes MB is published twice, as bench/plain and as bench/traced (--traceable), both verified
  here with the smoke pass and released. Each download is what `curl -L` with a token does: GET
  /ORG/NAME/resolve/main/FILE, the redirect to the portal's ticket link, the whole file. Three kinds, in
  turns so that a slow moment of the shared cores falls on all alike:
    untraced    bench/plain's shard (through nginx: X-Accel-Redirect, nginx sends it)
    first       bench/traced's served shard for a recipient who has no copy yet (the copy is issued by
                this request: every file's digest and the model.sig signature, then the bytes)
    repeat      the same, for a recipient whose copy was issued before
  Each side's servers are warmed first (every worker process has opened the served base and hashed its
  prefix once). The ratio is the traced file's rate over the untraced file's (target >= 0.9).

Usage: python -m bench.traced_serving [--megabytes 300] [--rounds 5] [--database-url postgres://...]
Needs nginx and curl; writes bench/results/traced-serving.md.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench.download import manage
from bench.verify import BASE_CONFIG, publish_results, write_checkpoint
from tests.support.deployment import start_nginx
from tests.support.servers import start_gunicorn, stop_process

# How the client reaches the portal: straight, or through nginx with the shipped site over its upstream.
FRONTS = {
    "gunicorn": "gunicorn alone",
    "nginx": "nginx in front (Unix socket, as shipped)",
    "nginx-tcp": "nginx in front (loopback TCP)",
}
SHAPE = {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 8, "num_key_value_heads": 8}
SHAPE["vocab_size"] = 16000
PEOPLE = """
import json, os
from access.models import ApiToken, User
from access.services import grant_access
from distribution.models import Repo
repos = [Repo.by_id("bench/plain"), Repo.by_id("bench/traced")]
tokens = []
for number in range(int(os.environ["BENCH_PEOPLE"])):
    user = User.objects.create_user(username=f"reader{number}", email=f"reader{number}@example.org")
    user.mark_email_verified()
    for repo in repos:
        grant_access(user, repo, granted_by=None)
    tokens.append(ApiToken.issue(user, "bench")[1])
print(json.dumps(tokens))
"""
VERIFY = """
from distribution.models import Revision
from verification.services import run_checks_stage, run_smoke_stage
for revision in Revision.objects.all():
    run_checks_stage(revision.pk)
    run_smoke_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == "verified", (revision, revision.failure_reason)
"""
LAYOUT = """
import json
from distribution.models import TracedRevision
traced = TracedRevision.objects.get()
print(json.dumps({path: entry for path, entry in traced.files.items()}))
"""


def checkpoint(directory: Path, megabytes: int) -> None:
    """A bf16 LLaMA of SHAPE with as many layers as make about `megabytes` MB, in two shards."""
    hidden, inter, vocab = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    per_layer, fixed = 2 * (4 * hidden * hidden + 3 * hidden * inter), 2 * 2 * vocab * hidden
    layers = max(4, round((megabytes * 1e6 - fixed) / per_layer))
    config = {**BASE_CONFIG, **SHAPE, "num_hidden_layers": layers}
    write_checkpoint(directory, config, shard_bytes=int(megabytes * 1e6 * 0.55))


def download(url: str, token: str, size: int) -> float:
    """Seconds for `curl -L` with the token to fetch the whole file (resolve, redirect, bytes), which must
    arrive whole."""
    command = ["curl", "-s", "-L", "-H", f"Authorization: Bearer {token}", "-o", "/dev/null"]
    command += ["-w", "%{http_code} %{size_download} %{time_total}", url]
    status, received, seconds = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    if (status, int(received)) != ("200", size):
        raise RuntimeError(f"{url} answered {status} with {received} bytes, not 200 with {size}")
    return float(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.traced_serving")
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--fronts",
        default="gunicorn,nginx,nginx-tcp",
        help="which to measure: gunicorn (alone), nginx (as shipped: over a Unix socket), nginx-tcp (loopback TCP)",
    )
    parser.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite under the scratch folder)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="weightgate-traced-serving-"))
    processes = []
    load_before = os.getloadavg()[0]
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WEIGHTGATE_REQUIRE", "CELERY"))},
            "WEIGHTGATE_VAR_DIR": str(scratch / "var"),
            "STORAGE_BACKEND": "local",
            "DOWNLOAD_RATE_LIMIT": "1000000000/60",
            "BENCH_PEOPLE": str(2 * args.rounds + 8),
        }
        env.pop("DATABASE_URL", None)
        if args.database_url:
            env.update(DATABASE_URL=args.database_url, DATABASE_CONN_MAX_AGE="60")
        checkpoint(scratch / "checkpoint", args.megabytes)
        manage(env, "migrate", "--verbosity=0")
        for repo, flags in (("bench/plain", []), ("bench/traced", ["--traceable"])):
            manage(env, "publish_checkpoint", str(scratch / "checkpoint"), "--repo", repo, *flags)
        manage(env, "shell", stdin=VERIFY)
        for repo in ("bench/plain", "bench/traced"):
            manage(env, "release", repo)
        tokens = json.loads(manage(env, "shell", stdin=PEOPLE).splitlines()[-1])
        layout = json.loads(manage(env, "shell", stdin=LAYOUT).splitlines()[-1])
        path = max(layout, key=lambda p: layout[p]["size"])
        plain_size = (scratch / "checkpoint" / path).stat().st_size
        traced_size, tail = layout[path]["size"], layout[path]["size"] - layout[path]["prefix_size"]
        storage = scratch / "var" / "storage"

        rows = []
        fronts = [(name, front) for name, front in FRONTS.items() if name in args.fronts.split(",")]
        for name, front in fronts:
            settings = {"X_ACCEL_REDIRECT_PREFIX": "/protected/", "TRUSTED_PROXIES": "1"} if "nginx" in front else {}
            socket = scratch / "web.sock" if name == "nginx" else None
            log = scratch / f"gunicorn-{name}.log"
            portal, base = start_gunicorn({**env, **settings}, log, workers=2, unix_socket=socket)
            running = [portal]
            processes.append(portal)
            if "nginx" in front:
                workdir = scratch / name
                workdir.mkdir()
                nginx, base = start_nginx(f"unix:{socket}" if socket else base, storage, workdir)
                running.append(nginx)
                processes.append(nginx)
            plain_url, traced_url = (
                f"{base}/bench/plain/resolve/main/{path}",
                f"{base}/bench/traced/resolve/main/{path}",
            )
            fresh = iter(tokens[2:])
            for _ in range(6):  # every worker process opens the served base and hashes its prefix
                download(traced_url, next(fresh), traced_size)
            download(plain_url, tokens[0], plain_size)
            download(traced_url, tokens[1], traced_size)
            times = {"untraced": [], "first": [], "repeat": []}
            for _ in range(args.rounds):
                times["untraced"].append(download(plain_url, tokens[0], plain_size))
                times["first"].append(download(traced_url, next(fresh), traced_size))
                times["repeat"].append(download(traced_url, tokens[1], traced_size))
            untraced, untraced_median = plain_size / min(times["untraced"]), plain_size / median(times["untraced"])
            for kind in ("first", "repeat"):
                rate, rate_median = traced_size / min(times[kind]), traced_size / median(times[kind])
                rows.append(
                    f"| {front} | {kind} | {rate / 1e9:.2f} GB/s (median {rate_median / 1e9:.2f}) "
                    f"| {untraced / 1e9:.2f} GB/s (median {untraced_median / 1e9:.2f}) | **{rate / untraced:.2f}** |"
                )
            for process in reversed(running):
                stop_process(process)
        lines = [
            "# Serving a traceable file against the same untraced file",
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, client and servers on "
            f"loopback; load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after; gunicorn "
            f"as shipped with 2 workers; database {'PostgreSQL' if args.database_url else 'SQLite'}",
            "",
            f"File: {path}, {traced_size / 1e6:.0f} MB served ({tail / 2**20:.1f} MiB of it the recipient's tail), "
            f"{plain_size / 1e6:.0f} MB untraced. Each download is `curl -L` with a token: resolve, the redirect, "
            f"the whole file; best of {args.rounds} in turns (median beside it).",
            "",
            "| front | traced download | traced rate | untraced rate | traced / untraced |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            "first: a recipient without a copy (issued by this request: every file's digest, the signature, the "
            "record); repeat: a recipient whose copy exists. Target >= 0.9.",
        ]
    except Exception:
        print(f"the benchmark failed; its logs are in {scratch}", file=sys.stderr)
        raise
    finally:
        for process in reversed(processes):
            stop_process(process)
    shutil.rmtree(scratch, ignore_errors=True)
    publish_results("traced-serving.md", lines)


if __name__ == "__main__":
    main()
