"""Processes and threads are sized by the CPUs the worker may use, within its container's or unit's quota: by
the host's count, a 4-CPU container on a 64-core host ran 16 threads per CPU, each throttled in turn."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from machine.cpus import affinity_cpus, quota_cpus, usable_cpus
from tests.support.cgroups import REPO_ROOT, run_in_group, v1_group, write_cgroup2_tree

# What a CPU worker sizes by the CPUs it may use: Celery's processes, torch's threads in the smoke pass
# (after a real verification of a tiny checkpoint), and gunicorn's processes from the shipped config.
SIZES = textwrap.dedent(
    """
    import json, os, runpy, tempfile
    from pathlib import Path
    import torch
    from machine.cpus import usable_cpus
    from verification.core.checks import check_directory
    from verification.core.tiny_llama import write_tiny_llama
    from workers.celery import app

    with tempfile.TemporaryDirectory() as directory:
        report = check_directory(write_tiny_llama(Path(directory) / "checkpoint"))
    print(json.dumps({
        "cores": os.cpu_count(),
        "usable": usable_cpus(),
        "celery": app.conf.worker_concurrency,
        "torch": torch.get_num_threads(),
        "torch inter-op": torch.get_num_interop_threads(),
        "gunicorn": runpy.run_path("deploy/gunicorn.conf.py")["workers"],
        "verified": report.ok and report.smoke["device"] == "cpu",
    }))
    """
)


def test_a_worker_under_a_cpu_quota_sizes_its_processes_and_threads_by_the_quota():
    if affinity_cpus() < 2:
        pytest.skip("a quota of one CPU changes nothing on a machine with one")
    # Half a CPU: 50 ms of every 100 ms.
    with v1_group("cpu", **{"cpu.cfs_period_us": 100_000, "cpu.cfs_quota_us": 50_000}) as group:
        run = run_in_group(group, SIZES)
    assert run.returncode == 0, run.stderr[-3000:]
    sizes = json.loads(run.stdout.strip().splitlines()[-1])
    assert sizes["cores"] >= 2 and sizes["verified"]
    assert (sizes["usable"], sizes["celery"], sizes["torch"], sizes["torch inter-op"]) == (1, 1, 1, 1)
    assert sizes["gunicorn"] == 2  # gunicorn keeps two processes at least, so one restarting never stops the site


def test_without_a_quota_every_cpu_the_process_may_run_on_counts():
    program = "import os; from machine.cpus import usable_cpus; os.sched_setaffinity(0, {0}); print(usable_cpus())"
    pinned = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert pinned.stdout.strip() == "1", pinned.stderr
    assert usable_cpus() == len(os.sched_getaffinity(0))


def cpu_tree(tmp_path, quotas: dict[str, str]):
    """A pod's v2 hierarchy with `quotas` (cpu.max by group; the root group has no cpu.max)."""
    return write_cgroup2_tree(tmp_path, {group: {"cpu.max": quota} for group, quota in quotas.items()})


def test_each_v2_group_up_to_the_root_limits_with_a_part_cpu_rounded_up(tmp_path):
    proc = cpu_tree(
        tmp_path, {"kubepods/pod1/worker": "max 100000", "kubepods/pod1": "150000 100000", "kubepods": "400000 100000"}
    )
    assert quota_cpus(proc) == [2, 4]  # the worker's own group has no quota; its pod's 1.5 CPUs count as 2


def test_the_tightest_v2_quota_wins_over_the_cpus_the_process_may_run_on(tmp_path):
    proc = cpu_tree(tmp_path, {"kubepods/pod1/worker": "50000 100000", "kubepods": "max 100000"})
    assert usable_cpus(proc) == 1


def test_without_cgroup_files_the_cpus_the_process_may_run_on_count(tmp_path):
    assert quota_cpus(cpu_tree(tmp_path, {})) == []
    assert quota_cpus(tmp_path / "no-proc") == []
