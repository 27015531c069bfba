"""The smoke pass plans with the memory the worker may take, within its container's limit: a CPU worker that
planned by the machine's MemAvailable would hold a model its cgroup cannot, and be killed on every retry."""

import textwrap
from pathlib import Path

from machine.memory import available_host_bytes, meminfo_available
from tests.support.cgroups import run_in_group, v1_group, write_cgroup2_tree

LIMIT = 1 << 30
GIB = 1 << 30


def test_a_worker_in_a_limited_cgroup_plans_the_smoke_pass_with_the_groups_room():
    assert meminfo_available(Path("/proc")) > 2 * LIMIT  # the machine says there is far more
    program = textwrap.dedent(
        """
        from verification.core.model_checks import smoke_devices
        (cpu,) = smoke_devices()
        print(cpu.device, cpu.free)
        """
    )
    with v1_group("memory", **{"memory.limit_in_bytes": LIMIT}) as group:
        run = run_in_group(group, program)
    assert run.returncode == 0, run.stderr[-2000:]
    device, free = run.stdout.split()
    assert device == "cpu" and 0 < int(free) < LIMIT  # less its own usage (torch imported)


def memory_tree(root: Path, *, limits: dict[str, str], usage: int, file_pages: int) -> Path:
    """A pod's v2 hierarchy with `limits` (memory.max by group), each group using `usage` bytes, `file_pages` of
    them page cache."""
    files = {
        group: {
            "memory.max": limits.get(group, "max"),
            "memory.current": str(usage),
            "memory.stat": f"anon 1000\nfile {file_pages}\ninactive_file {file_pages}",
        }
        for group in ("", "kubepods", "kubepods/pod1", "kubepods/pod1/worker")
    }
    return write_cgroup2_tree(root, files)


def test_the_tightest_limit_of_a_v2_group_and_its_parents_counts_with_the_page_cache_as_room(tmp_path):
    proc = memory_tree(
        tmp_path, limits={"kubepods/pod1": str(16 * GIB), "kubepods": str(64 * GIB)}, usage=10 * GIB, file_pages=GIB
    )
    assert available_host_bytes(proc) == 16 * GIB - 10 * GIB + GIB  # the pod's limit, not the host's 240 GiB


def test_without_a_limit_anywhere_the_machines_memory_counts(tmp_path):
    proc = memory_tree(tmp_path, limits={}, usage=10 * GIB, file_pages=0)
    assert available_host_bytes(proc) == 251658240 * 1024
