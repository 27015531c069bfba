"""`python -m verification`: progress per file on a terminal (stderr), and nothing but the report on stdout."""

import io
import json
import os
import pty
import subprocess
import sys
import threading

import pytest

from tests.support.servers import REPO_ROOT
from verification.core.checks import CheckpointFile
from verification.core.progress import CLEAR_LINE, TerminalProgress
from verification.core.tiny_llama import write_tiny_llama

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


@pytest.fixture
def checkpoint(tmp_path):
    return write_tiny_llama(tmp_path / "ckpt")


def read_until_closed(descriptor: int, into: list) -> None:
    while True:
        try:
            data = os.read(descriptor, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not data:
            return
        into.append(data)


def run_cli(*args, stderr_on_terminal: bool):
    """Run the CLI with stdout on a pipe and stderr on a pseudo-terminal (or a pipe): (code, stdout, stderr)."""
    command = [sys.executable, "-m", "verification", *map(str, args)]
    if not stderr_on_terminal:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown: list[bytes] = []
    reader = threading.Thread(target=read_until_closed, args=(controller, shown))
    reader.start()
    stdout, _ = child.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(controller)
    return child.returncode, stdout.decode(), b"".join(shown).decode()


def test_on_a_terminal_each_file_shows_its_bytes_and_rate_and_stdout_holds_only_the_json(checkpoint):
    code, stdout, stderr = run_cli(checkpoint, "--json", stderr_on_terminal=True)
    assert code == 0, stderr
    assert json.loads(stdout)["ok"] is True  # nothing else on stdout
    finished = [line for line in stderr.replace(CLEAR_LINE, "\n").splitlines() if line.startswith("read ")]
    for shard in SHARDS:
        line = next(line for line in finished if line.startswith(f"read {shard}: "))
        assert "KiB in " in line or "MiB in " in line
        assert line.endswith("/s)")


def test_without_a_terminal_stderr_stays_silent(checkpoint):
    code, stdout, stderr = run_cli(checkpoint, "--json", "--no-smoke", stderr_on_terminal=False)
    assert code == 0 and json.loads(stdout)["ok"] is True
    assert stderr == ""


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_status_line_shows_each_file_being_read_with_its_bytes_and_rate():
    screen, clock = io.StringIO(), Clock()
    progress = TerminalProgress(screen, clock=clock, interval=0, width=200)
    shard = CheckpointFile("model-00001-of-00002.safetensors", 4 * 2**30, open)
    config = CheckpointFile("config.json", 600, open)
    progress(shard, 0)
    progress(config, 0)
    clock.now += 2
    progress(shard, 2**30)
    assert screen.getvalue().endswith(
        f"{CLEAR_LINE}0 files read; reading model-00001-of-00002.safetensors 1.0 GiB of 4.0 GiB, 512.0 MiB/s"
        " | config.json 0 B of 600 B, 0 B/s"
    )
    progress(config, 600)
    assert f"{CLEAR_LINE}read config.json: 600 B in 2.00 s (300 B/s)\n" in screen.getvalue()
    assert screen.getvalue().endswith(
        "1 file read; reading model-00001-of-00002.safetensors 1.0 GiB of 4.0 GiB, 512.0 MiB/s"
    )
    progress.close()
    assert screen.getvalue().endswith(CLEAR_LINE)


def test_the_status_line_never_wraps_past_the_terminals_width():
    screen = io.StringIO()
    progress = TerminalProgress(screen, clock=Clock(), interval=0, width=40)
    progress(CheckpointFile("a-very-long-shard-name-" * 4 + ".safetensors", 10**9, open), 1000)
    assert len(screen.getvalue().rsplit(CLEAR_LINE, 1)[-1]) == 39
