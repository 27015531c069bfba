"""`make run` on the embedded default: the portal, a worker and a released demo repo; Ctrl-C stops it all."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, free_port, wait_until


def processes_using(marker: str) -> list[int]:
    """Pids of processes whose environment carries `marker`: what `make run` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def demo(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("S3_", "DATABASE_URL", "CELERY_", "EMAIL_", "PYTEST", "WEIGHTGATE_REQUIRE"))
    }
    env.update(PORT=str(port), WEIGHTGATE_VAR_DIR=str(tmp_path / "var"))
    log = tmp_path / "make-run.log"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def started():
        if process.poll() is not None:
            raise RuntimeError(f"make run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        return "Weightgate is running at" in log.read_text()

    try:
        wait_until(started, timeout=240, interval=0.5, what="make run to print its URL")
        yield port, log, process, str(tmp_path / "var")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_make_run_serves_the_released_demo_and_stops_everything_on_ctrl_c(demo):
    port, log, process, marker = demo
    output = log.read_text()
    assert f"http://localhost:{port}/" in output
    assert re.search(r"reviewer: admin / \S+", output) and re.search(r"applicant: alice / \S+", output)
    assert re.search(r"the secret [A-Z2-7]{32}\n", output) and re.search(r"the recovery code \d{8} \(once\)", output)
    assert "released" in output
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/demo/tiny-llama", timeout=10) as page:
        html = page.read().decode()
    assert "demo/tiny-llama" in html and "Latest release" in html
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/signing-key.pem", timeout=10) as key:
        fingerprint = key.headers["X-Key-Fingerprint"]
        assert key.read().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert f"(key {fingerprint[:16]}…)" in output  # the key printed at start is the one the portal publishes
    assert len(processes_using(marker)) >= 3  # make's child, the web server and the worker
    fetch_a_range_through_gunicorn(port, marker)

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    process.wait(timeout=60)
    wait_until(lambda: not processes_using(marker), timeout=30, what="every process make run started to stop")


def listening_process(port: int, among: list[int]) -> int:
    """Of `among`, the process that opened the socket listening on `port` (the others inherited it)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    holders = []
    for pid in among:
        try:
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                holders.append(pid)
        except OSError:
            continue
    parents = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in holders}
    (master,) = [pid for pid in holders if parents[pid] not in holders]
    return master


def test_make_run_stops_everything_and_names_the_process_when_one_dies(demo):
    """A web server killed under it (the OOM killer, say): make run does not go on half there, it stops the
    worker too and says which process ended and how."""
    port, log, process, marker = demo
    os.kill(listening_process(port, processes_using(marker)), signal.SIGKILL)
    assert process.wait(timeout=60) != 0
    wait_until(lambda: not processes_using(marker), timeout=30, what="every process make run started to stop")
    assert "a process stopped unexpectedly: gunicorn (killed by signal 9); the others were stopped too" in (
        log.read_text()
    )


def fetch_a_range_through_gunicorn(port: int, var_dir: str) -> None:
    """A staff token, a byte range with curl, served by gunicorn with sendfile (no count in Python)."""
    env = {**os.environ, "WEIGHTGATE_VAR_DIR": var_dir}
    for name in [k for k in env if k.startswith(("DATABASE_URL", "CELERY_", "S3_", "PYTEST"))]:
        env.pop(name)
    token = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "create_account",
            "operator",
            "--email",
            "operator@example.org",
            "--staff",
            "--print-token",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shard = "model-00001-of-00002.safetensors"
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-L",
            "-r",
            "100-199",
            "-H",
            f"Authorization: Bearer {token}",
            "-w",
            "%{http_code}",
            f"http://127.0.0.1:{port}/demo/tiny-llama/resolve/main/{shard}",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body, status = result.stdout[:-3], result.stdout[-3:]
    assert status == b"206"
    assert body == (Path(var_dir) / "demo-checkpoint" / shard).read_bytes()[100:200]
    with sqlite3.connect(Path(var_dir) / "weightgate.sqlite3") as database:
        rows = database.execute(
            "select status, bytes_expected, bytes_served from distribution_downloadevent"
        ).fetchall()
    assert rows == [(206, 100, None)]  # sent by sendfile: the portal never counted the bytes itself
