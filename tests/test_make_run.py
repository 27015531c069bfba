"""`make run` on the embedded default: the portal, a worker and a released demo repo; Ctrl-C stops it all."""

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.services import REPO_ROOT, free_port, wait_until


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
    assert "released" in output
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/demo/tiny-llama", timeout=10) as page:
        html = page.read().decode()
    assert "demo/tiny-llama" in html and "Latest release" in html
    assert len(processes_using(marker)) >= 3  # make's child, the web server and the worker

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    process.wait(timeout=60)
    wait_until(lambda: not processes_using(marker), timeout=30, what="every process make run started to stop")
