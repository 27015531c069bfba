"""What `publish_checkpoint` prints: the revision id alone on stdout (automation reads it), progress on stderr
as a bar on a terminal and as plain lines elsewhere, nothing but the result with --quiet, JSON with --json."""

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import termios

import pytest
from django.core.management import call_command

from distribution.models import Revision
from tests.support.flows import wait_for_verdict
from tests.support.publishing import publish_command, run_publish
from tests.support.servers import REPO_ROOT
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db(transaction=True)
# Log records (the embedded broker's client warns that it has no hostname) are not the command's output.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def printed(stream: str) -> list[str]:
    return [line for line in stream.splitlines() if not LOG_RECORD.match(line)]


@pytest.fixture
def local_env(worker_env):
    return {**worker_env, "STORAGE_BACKEND": "local"}


@pytest.fixture(autouse=True)
def verdicts_before_the_flush(worker):
    """The run's worker verifies what these commands publish; the flush after each test waits for its
    verdicts, or it truncates tables the worker is writing (a deadlock in PostgreSQL, and a flush undone)."""
    yield
    for revision in Revision.objects.filter(state__in=[Revision.State.UPLOADED, Revision.State.VERIFYING]):
        wait_for_verdict(revision)


def test_off_a_terminal_stdout_is_the_revision_id_and_stderr_plain_lines(local_env, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    result = run_publish(checkpoint, "acme/piped", env=local_env)
    assert result.returncode == 0, result.stderr
    revision = Revision.objects.get(commit=result.stdout.strip())
    lines = printed(result.stderr)
    assert lines[0] == f"publishing 5 files ({sizeof(checkpoint)}) to acme/piped as {revision.commit}"
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(p.name for p in checkpoint.iterdir())
    assert all(line.startswith("uploaded ") for line in lines[1:]) and lines[-1].endswith(", 5/5 files")
    assert "\r" not in result.stderr


def test_quiet_prints_the_revision_id_and_nothing_else(local_env, tmp_path):
    result = run_publish(write_tiny_llama(tmp_path / "ckpt"), "acme/quiet", "--quiet", env=local_env)
    assert result.returncode == 0 and printed(result.stderr) == []
    # Published whole (no draft left): a worker of the run may already be verifying it.
    published = Revision.objects.get(commit=result.stdout.strip())
    assert published.state != Revision.State.DRAFT
    assert published.files.exclude(path="model.sig").count() == 5  # once verified, the portal's signature too


def test_on_a_terminal_the_progress_is_a_bar_and_stdout_still_the_revision_id(local_env, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    terminal, its_end = pty.openpty()
    fcntl.ioctl(its_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        publish_command(checkpoint, "acme/watched"),
        cwd=REPO_ROOT,
        env=local_env,
        stdout=subprocess.PIPE,
        stderr=its_end,
    )
    os.close(its_end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    commit = process.communicate(timeout=120)[0].decode().strip()
    assert process.returncode == 0
    assert Revision.objects.filter(commit=commit).exists()
    bar = shown.decode(errors="replace")
    assert "\r" in bar and "100%|" in bar and f"acme/watched {commit[:12]}" in bar and "5/5 files" in bar
    assert "publishing 5 files" not in bar  # the plain lines are for logs, not terminals


def test_json_says_the_revision_files_bytes_and_what_was_sent_now(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    out = io.StringIO()
    call_command("publish_checkpoint", str(checkpoint), "--repo", "acme/listed", "--json", "--quiet", stdout=out)
    result = json.loads(out.getvalue())
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir()}
    revision = Revision.objects.get()
    assert (result["revision"], result["repo"], result["state"]) == (revision.commit, "acme/listed", "uploaded")
    assert (result["storage"], result["resumed"], result["bytes"]) == ("local", False, sum(sizes.values()))
    assert result["uploaded"] == {"files": 5, "bytes": sum(sizes.values())}
    assert result["already_there"] == {"files": 0, "bytes": 0}
    assert {f["path"]: (f["size"], f["status"], f["sent"]) for f in result["files"]} == {
        name: (size, "uploaded", size) for name, size in sizes.items()
    }


def sizeof(directory) -> str:
    from tqdm import tqdm

    return tqdm.format_sizeof(sum(p.stat().st_size for p in directory.iterdir()), "B", 1024)
