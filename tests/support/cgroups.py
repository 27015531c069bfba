"""Processes in real cgroups, and cgroup trees laid out as files: what a worker in a container sees.

This machine's kernel offers the memory and cpu controllers on v1 only (its cgroup2 mount has none), so a
real group is made on v1 and v2 is read from files laid out as the kernel lays them out."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
V1_ROOT = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def v1_group(controller: str, **settings: int):
    """A new group under the v1 `controller`'s mount with `settings` written into its files (name=value)."""
    mount = V1_ROOT / controller
    if not os.access(mount, os.W_OK):
        pytest.skip(f"needs root and the v1 {controller} controller at {mount} to make a group")
    group = mount / f"weightgate-test-{os.getpid()}"
    group.mkdir()
    try:
        for name, value in settings.items():
            (group / name).write_text(str(value))
        yield group
    finally:
        group.rmdir()


def run_in_group(group: Path, program: str, *args: str) -> subprocess.CompletedProcess:
    """`program` in a new Python that is in `group` from its start: a shell joins the group, then becomes the
    Python (preexec_fn is not safe in a process with threads)."""
    joined = f'echo $$ > "{group / "cgroup.procs"}" && exec "$0" -c "$@"'
    return subprocess.run(
        ["sh", "-c", joined, sys.executable, program, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=180,
    )


def write_cgroup2_tree(root: Path, files: dict[str, dict[str, str]], *, path: str = "/kubepods/pod1/worker") -> Path:
    """/proc/self/{cgroup,mountinfo}, /proc/meminfo and a cgroup2 hierarchy holding this process at `path`, as a
    Kubernetes pod's container sees them; `files` gives each group (relative, "" the root) its files' text.
    Returns the /proc to read."""
    proc, hierarchy = root / "proc", root / "cgroup2"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 268435456 kB\nMemAvailable: 251658240 kB\n")
    (proc / "self" / "cgroup").write_text(f"0::{path}\n")
    (proc / "self" / "mountinfo").write_text(
        f"24 30 0:22 / {root / 'sys'} rw,nosuid - sysfs sysfs rw\n"
        f"35 24 0:30 / {hierarchy} rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    parts = path.strip("/").split("/")
    for depth in range(len(parts) + 1):
        group = "/".join(parts[:depth])
        directory = hierarchy / group
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.get(group, {}).items():
            (directory / name).write_text(text + "\n")
    return proc
