"""How many CPUs this process may keep busy: the CPUs it may run on (its affinity, which a cpuset sets),
and no more than its cgroups' CPU quotas allow. A quota is not in os.cpu_count(): gunicorn or a thread
pool sized by the host's 64 cores inside a 4-CPU container runs 16 threads per CPU, each throttled in
turn (a quota is time per period: over it, every thread of the group waits out the period).

Both cgroup versions are read (v1's cpu controller, v2's cpu.max), the process's own group and each group
above it; a quota of 1.5 CPUs counts as 2, as the JVM and Go's runtime round it."""

import functools
import math
import os
from pathlib import Path

from machine.cgroups import groups, read_number


@functools.cache
def usable_cpus(proc: Path = Path("/proc")) -> int:
    """The least of the CPUs this process may run on and every CPU quota above it; at least 1. Read once per
    process (about 0.1 ms of /proc and cgroup files, asked again at each copy a web process issues): what is
    sized by it, gunicorn's and Celery's processes, is fixed at their start too, so a new quota needs a restart."""
    limits = [affinity_cpus(), *quota_cpus(proc)]
    return max(1, min(limits))


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def quota_cpus(proc: Path) -> list[int]:
    """The CPUs each quota-limited cgroup holding this process allows, from its own group upwards."""
    allowed = []
    for directory, version in groups(proc, "cpu"):
        quota, period = read_quota(directory, version)
        if quota is not None and period:
            allowed.append(math.ceil(quota / period))
    return allowed


def read_quota(directory: Path, version: int) -> tuple[int | None, int | None]:
    """(quota, period) in microseconds; no quota is (None, ...)."""
    if version == 1:
        quota = read_number(directory / "cpu.cfs_quota_us")
        return (None if quota is None or quota < 0 else quota), read_number(directory / "cpu.cfs_period_us")
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None, None
    return (None if quota == "max" else int(quota)), int(period)
