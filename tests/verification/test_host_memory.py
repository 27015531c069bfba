"""The smoke pass plans with the memory the worker may take, within its container's limit: a CPU worker that
planned by the machine's MemAvailable would hold a model its cgroup cannot, and be killed on every retry."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from verification.core.host_memory import available_host_bytes, meminfo_available

REPO_ROOT = Path(__file__).resolve().parents[2]
V1_MEMORY = Path("/sys/fs/cgroup/memory")
LIMIT = 1 << 30


@pytest.fixture
def limited_group():
    """A memory cgroup (v1, the controller this machine's kernel offers) limited to LIMIT bytes."""
    if not os.access(V1_MEMORY, os.W_OK):
        pytest.skip("needs root and the v1 memory controller at /sys/fs/cgroup/memory to make a group")
    group = V1_MEMORY / f"weightgate-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(LIMIT))
        yield group
    finally:
        group.rmdir()


def test_a_worker_in_a_limited_cgroup_plans_the_smoke_pass_with_the_groups_room(limited_group):
    assert meminfo_available(Path("/proc")) > 2 * LIMIT  # the machine says there is far more
    program = textwrap.dedent(
        """
        from verification.core.model_checks import smoke_devices
        (cpu,) = smoke_devices()
        print(cpu.device, cpu.free)
        """
    )
    # The shell joins the group, then becomes the worker's Python: the group's limit is its own from the start.
    joined = f'echo $$ > "{limited_group / "cgroup.procs"}" && exec "$0" -c "$1"'
    run = subprocess.run(
        ["sh", "-c", joined, sys.executable, program],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    device, free = run.stdout.split()
    assert device == "cpu" and 0 < int(free) < LIMIT  # less its own usage (torch imported)


def write_v2_tree(root: Path, *, limits: dict[str, str], usage: int, file_pages: int) -> Path:
    """/proc/self/{cgroup,mountinfo}, /proc/meminfo and a cgroup2 hierarchy, as a Kubernetes pod's container
    sees them. This machine's kernel offers the memory controller on v1 only, so v2 is read from files laid
    out as the kernel lays them out."""
    proc, hierarchy = root / "proc", root / "cgroup2"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 268435456 kB\nMemAvailable: 251658240 kB\n")
    (proc / "self" / "cgroup").write_text("0::/kubepods/pod1/worker\n")
    (proc / "self" / "mountinfo").write_text(
        f"24 30 0:22 / {root / 'sys'} rw,nosuid - sysfs sysfs rw\n"
        f"35 24 0:30 / {hierarchy} rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    for group in ("", "kubepods", "kubepods/pod1", "kubepods/pod1/worker"):
        directory = hierarchy / group
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "memory.max").write_text(limits.get(group, "max") + "\n")
        (directory / "memory.current").write_text(f"{usage}\n")
        (directory / "memory.stat").write_text(f"anon 1000\nfile {file_pages}\ninactive_file {file_pages}\n")
    return proc


def test_the_tightest_limit_of_a_v2_group_and_its_parents_counts_with_the_page_cache_as_room(tmp_path):
    gib = 1 << 30
    proc = write_v2_tree(
        tmp_path, limits={"kubepods/pod1": str(16 * gib), "kubepods": str(64 * gib)}, usage=10 * gib, file_pages=gib
    )
    assert available_host_bytes(proc) == 16 * gib - 10 * gib + gib  # the pod's limit, not the host's 240 GiB


def test_without_a_limit_anywhere_the_machines_memory_counts(tmp_path):
    proc = write_v2_tree(tmp_path, limits={}, usage=10 << 30, file_pages=0)
    assert available_host_bytes(proc) == 251658240 * 1024
