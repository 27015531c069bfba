"""Serving downloads, side by side with plain baselines in one run:

  (a) throughput of a large file: the portal (gunicorn, sendfile) against nginx serving the same
      file (Python's static server when nginx is not installed), one stream and 16 at once
  (b) authorized, audited redirects: GET /ORG/NAME/resolve/main/FILE on S3 storage (token checked,
      grant checked, a DownloadEvent and its audit event recorded, a presigned URL) against a bare
      Django view answering 302, both under the same gunicorn, 64 concurrent clients (wrk). Measured
      as deployed (repeats answered from the checks of the last DOWNLOAD_DECISION_SECONDS, events
      spooled) and strict (DOWNLOAD_DECISION_SECONDS=0: every request checked and written to
      PostgreSQL before it is answered). After each, the server is stopped and the events stored
      are counted against the redirects wrk received: none may be missing. Every server is first
      warmed up for 3 s on another repo (bench/warm), so no side's first connections, clients and
      imports are measured, and no warm-up event is counted.

Usage: python -m bench.download [--gigabytes 1] [--database-url postgres://...]
Targets: (a) at least 0.9 of the static server; (b) at least half the bare view's rate.
"""

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.verify import publish_results
from tests.support.servers import free_ports, start_seaweedfs, stop_process, wait_for_bucket, wait_until

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ["--workers=2", "--threads=4", "--graceful-timeout=5", "--no-control-socket"]
SETUP = """
import hashlib, os
from access.models import User
from access.services import grant_access
from distribution.models import Repo, Revision, RevisionFile
from distribution.storage import get_storage
from django.utils import timezone
alice = User.objects.get(username="alice")
# bench/warm: the same as bench/small, for warming the servers up without adding to what is counted.
for name, backend, source in (("big", "local", os.environ["BENCH_BIG"]), ("small", "s3", os.environ["BENCH_SMALL"]),
                              ("warm", "s3", os.environ["BENCH_SMALL"])):
    repo = Repo.objects.create(org="bench", name=name)
    revision = Revision.objects.create(repo=repo, commit={"big": "a", "small": "b", "warm": "c"}[name] * 40,
                                       state="released", storage_backend=backend, released_at=timezone.now())
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()
    stored = RevisionFile.objects.create(revision=revision, path="weights.bin", size=os.path.getsize(source),
                                         sha256=digest)
    get_storage(backend).put_file(stored.storage_key, source)
    grant_access(alice, repo, granted_by=None)
# bench/many: a file for every request of the first-request runs (wrk thread T asks for fT000001.bin,
# fT000002.bin, ...). Redirects are presigned without asking S3, so the objects need not exist.
repo = Repo.objects.create(org="bench", name="many")
revision = Revision.objects.create(repo=repo, commit="d" * 40, state="released", storage_backend="s3",
                                   released_at=timezone.now())
RevisionFile.objects.bulk_create((
    RevisionFile(revision=revision, path=f"f{thread}{n:06d}.bin", size=1, sha256="0" * 64)
    for thread in (0, 1) for n in range(1, int(os.environ["BENCH_FIRST_FILES"]) + 1)
), batch_size=5000)
grant_access(alice, repo, granted_by=None)
"""
# Every request of the first-request runs names a file that wrk's thread has not asked for before.
FIRST_REQUESTS = """
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) n = 0 end
function request()
  n = n + 1
  return wrk.format(nil, string.format("/bench/many/resolve/main/f%d%06d.bin", id, n))
end
"""
FIRST_FILES = 60_000  # per wrk thread: more than it asks for in 10 s


def manage(env, *args, stdin=None) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin, text=True, capture_output=True
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def serve(command, env, port, log: Path):
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )

    def up():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status > 0  # any answer, redirects not followed
        except OSError:
            return False
        finally:
            connection.close()

    wait_until(up, timeout=60, what=f"{command[0]} on port {port}")
    return process


def curl_seconds(url: str, size: int) -> float:
    """Seconds for one whole download, which must arrive whole."""
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
    received, seconds = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    if int(received) != size:
        raise RuntimeError(f"{url} sent {received} bytes, not {size}")
    return float(seconds)


def throughput(url: str, size: int, streams: int) -> float:
    """GB/s over `streams` whole-file downloads at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: curl_seconds(url, size), range(streams)))
    return streams * size / (time.perf_counter() - started) / 1e9


def best_throughputs(urls: list[str], size: int, streams: int, rounds: int = 5) -> list[float]:
    """The best GB/s of each URL over `rounds`, taken in turns so that a slow moment of the shared
    cores falls on both sides alike."""
    best = [0.0] * len(urls)
    for _ in range(rounds):
        for index, url in enumerate(urls):
            best[index] = max(best[index], throughput(url, size, streams))
    return best


def wrk(url: str, token: str | None, seconds: int = 10, script: Path | None = None) -> dict:
    command = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if script:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def latency(percent: str) -> float:
        found = re.search(rf"^\s*{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if found is None:
            raise RuntimeError(f"cannot read the {percent}th percentile from wrk:\n{output}")
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def stored_redirects(env, repo_id: str) -> int:
    code = f"from distribution.models import DownloadEvent as E; print(E.objects.filter(repo_id='{repo_id}').count())"
    return int(manage(env, "shell", "--no-imports", "-c", code))


def static_server(folder: Path, port: int, scratch: Path, env, front: tuple[int, int, Path] | None = None):
    """nginx serving `folder` on `port` (Python's static server without nginx); with `front` =
    (port, portal's port, storage root), nginx also stands in front of the portal as the README's
    X_ACCEL_REDIRECT_PREFIX deployment does: the portal decides, nginx sends the file."""
    if shutil.which("nginx"):
        conf = scratch / "nginx.conf"
        front_server = ""
        if front is not None:
            front_port, portal_port, storage = front
            front_server = f"""server {{ listen 127.0.0.1:{front_port};
    location /protected/ {{ internal; alias {storage}/; }}
    location / {{ proxy_pass http://127.0.0.1:{portal_port}; proxy_set_header Host $http_host; }} }}"""
        conf.write_text(f"""daemon off; user root; worker_processes 2;
pid {scratch}/nginx.pid; error_log {scratch}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {scratch}/body;
  proxy_temp_path {scratch}/proxy; fastcgi_temp_path {scratch}/fcgi; uwsgi_temp_path {scratch}/uwsgi;
  scgi_temp_path {scratch}/scgi;
  server {{ listen 127.0.0.1:{port}; root {folder}; }}
  {front_server} }}
""")
        return "nginx", serve(["nginx", "-c", str(conf), "-p", str(scratch)], env, port, scratch / "nginx.log")
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    return "python http.server", serve(command, env, port, scratch / "static.log")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.download")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--database-url", default="", help="PostgreSQL for (b); SQLite serialises the event writes")
    parser.add_argument("--cache-url", default="", help="Redis for the rate-limit counters, as in production")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="weightgate-bench-"))
    processes = []
    try:
        weed_dir = scratch / "weed"
        weed_dir.mkdir()
        weed, endpoint = start_seaweedfs(weed_dir)
        processes.append(weed)
        wait_for_bucket(weed, endpoint, weed_dir)
        big, small = scratch / "static" / "weights.bin", scratch / "small.bin"
        big.parent.mkdir()
        with open(big, "wb") as out:
            block = os.urandom(64 * 1024 * 1024)
            for _ in range(max(1, round(args.gigabytes * 1e9 / len(block)))):
                out.write(block)
        small.write_bytes(os.urandom(1024 * 1024))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WEIGHTGATE_REQUIRE"))},
            **endpoint.env(),
            "WEIGHTGATE_VAR_DIR": str(scratch / "var"),
            "BENCH_BIG": str(big),
            "BENCH_SMALL": str(small),
            "BENCH_FIRST_FILES": str(FIRST_FILES),
            "DOWNLOAD_RATE_LIMIT": "1000000000/60",
            "STORAGE_BACKEND": "local",
        }
        if args.database_url:
            # As a deployment would run: persistent connections, and the rate-limit counters in Redis.
            env.update(DATABASE_URL=args.database_url, DATABASE_CONN_MAX_AGE="60")
        if args.cache_url:
            env["CACHE_URL"] = args.cache_url
        manage(env, "migrate", "--verbosity=0")
        token = manage(env, "create_account", "alice", "--email", "alice@example.org", "--verified", "--print-token")
        manage(env, "shell", stdin=SETUP)
        portal_port, strict_port, bare_port, static_port, accel_port, front_port = free_ports(6)
        servers = {}
        for label, application, port, settings in (
            ("portal", "portal.wsgi:application", portal_port, {"DOWNLOAD_DECISION_SECONDS": "2"}),
            ("strict", "portal.wsgi:application", strict_port, {"DOWNLOAD_DECISION_SECONDS": "0"}),
            ("bare", "bench.bare_redirect:application", bare_port, {}),
            ("accel", "portal.wsgi:application", accel_port, {"X_ACCEL_REDIRECT_PREFIX": "/protected/"}),
        ):
            command = [sys.executable, "-m", "gunicorn", application, f"--bind=127.0.0.1:{port}", *GUNICORN]
            servers[label] = serve(command, {**env, **settings}, port, scratch / f"{label}.log")
            processes.append(servers[label])
        front = (front_port, accel_port, scratch / "var" / "storage")
        static_name, static = static_server(big.parent, static_port, scratch, env, front=front)
        processes.append(static)

        ticket = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}",
                "-H",
                f"Authorization: Bearer {token}",
                f"http://127.0.0.1:{portal_port}/bench/big/resolve/main/weights.bin",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        size = big.stat().st_size
        portal_bytes = subprocess.run(["curl", "-s", ticket], capture_output=True, check=True).stdout
        assert hashlib.sha256(portal_bytes).digest() == hashlib.sha256(big.read_bytes()).digest()
        del portal_bytes
        rows = []
        os.kill(weed.pid, signal.SIGSTOP)  # (a) needs no S3: nothing else shares the cores meanwhile
        # The same ticket through nginx in front of the portal (only where nginx is installed).
        fronted = ticket.replace(f":{portal_port}/", f":{front_port}/") if static_name == "nginx" else None
        if fronted:
            fronted_bytes = subprocess.run(["curl", "-s", fronted], capture_output=True, check=True).stdout
            assert hashlib.sha256(fronted_bytes).digest() == hashlib.sha256(big.read_bytes()).digest()
            del fronted_bytes
        try:
            for streams in (1, 16):
                urls = [ticket, f"http://127.0.0.1:{static_port}/weights.bin", *([fronted] if fronted else [])]
                ours, theirs, *behind = best_throughputs(urls, size, streams)
                for label, rate in (
                    ("gunicorn sendfile", ours),
                    *(("nginx front, X-Accel-Redirect", r) for r in behind),
                ):
                    rows.append(
                        f"| (a) {size / 1e9:.1f} GB file, {streams} stream(s), {label} | {rate:.2f} GB/s | "
                        f"{static_name} {theirs:.2f} GB/s | {rate / theirs:.2f} |"
                    )
        finally:
            os.kill(weed.pid, signal.SIGCONT)
        stop_process(servers["accel"])  # not part of (b)
        small = "/bench/small/resolve/main/weights.bin"
        for port in (bare_port, portal_port, strict_port):  # first connections, clients, imports: not measured
            wrk(f"http://127.0.0.1:{port}{small.replace('small', 'warm')}", token, seconds=3)
        bare = wrk(f"http://127.0.0.1:{bare_port}{small}", None)
        first_requests = scratch / "first_requests.lua"
        first_requests.write_text(FIRST_REQUESTS)
        counts = []
        for label, port in (("portal", portal_port), ("strict", strict_port)):
            before = {repo: stored_redirects(env, repo) for repo in ("bench/small", "bench/many")}
            repeated = wrk(f"http://127.0.0.1:{port}{small}", token)
            first = wrk(f"http://127.0.0.1:{port}/", token, script=first_requests)
            stop_process(servers[label])  # its workers store what they spooled as they exit
            manage(env, "store_spooled_downloads")  # and whatever a worker that did not exit cleanly left
            for measured, repo in ((repeated, "bench/small"), (first, "bench/many")):
                measured["events"] = stored_redirects(env, repo) - before[repo]
            name = "as deployed" if label == "portal" else "strict: every request checked and written"
            for measured, what in ((repeated, "the same file again and again"), (first, "a new file each time")):
                counts.append((f"{name}, {what}", measured))
                rows.append(
                    f"| (b) redirects/s, 64 clients, {what}, {name} | {measured['rps']:.0f} (p50 "
                    f"{measured['p50']:.1f} ms, p99 {measured['p99']:.1f} ms) | bare view {bare['rps']:.0f} (p50 "
                    f"{bare['p50']:.1f} ms, p99 {bare['p99']:.1f} ms) | {measured['rps'] / bare['rps']:.2f} |"
                )
        database = "PostgreSQL" if args.database_url else "SQLite"
        publish_results(
            "download.md",
            [
                "# Serving downloads",
                f"machine: {os.cpu_count()} cores, client and servers on the same machine (loopback); gunicorn "
                f"{' '.join(GUNICORN)}; database {database}; cache {'Redis' if args.cache_url else 'files'}; "
                "S3 is SeaweedFS",
                "",
                "| measure | Weightgate | baseline | ratio |",
                "| --- | --- | --- | --- |",
                *rows,
                "",
                *(
                    f"{label}: {c['requests']} redirects received by wrk, {c['events']} download events stored "
                    f"(at least as many: a request in flight when wrk stops is answered and recorded, not "
                    f"counted), {c['errors']} answered with errors (must be 0)"
                    for label, c in counts
                ),
                "targets: (a) >= 0.9, (b) >= 0.5 (the issue's (b) is the same file again and again)",
            ],
        )
    except Exception:
        print(f"the benchmark failed; its logs are in {scratch}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        for process in reversed(processes):
            stop_process(process)


if __name__ == "__main__":
    main()
