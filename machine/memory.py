"""How much memory this process may still take: the machine's MemAvailable, and no more than its
memory cgroups leave below their limits. A container's limit is not in /proc/meminfo: a CPU worker in a
16 GiB container on a 256 GiB host that planned its smoke pass by MemAvailable would hold a 40 GB model
whole and be killed, again on every retry.

Both cgroup versions are read (v1's memory controller, v2's unified hierarchy), the process's own group
and each group above it up to the mount's root; a group's room is its limit less its usage, plus the
file pages it holds (the page cache, which the kernel reclaims before it kills), as MemAvailable counts.
"""

from pathlib import Path

from machine.cgroups import groups, read_number

UNLIMITED = 1 << 60  # v1 writes "no limit" as a number near 2^63


def available_host_bytes(proc: Path = Path("/proc")) -> int | None:
    """The least of MemAvailable and every memory cgroup's room; None when nothing can be read."""
    rooms = [room for room in (meminfo_available(proc), *cgroup_rooms(proc)) if room is not None]
    return min(rooms) if rooms else None


def meminfo_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cgroup_rooms(proc: Path) -> list[int]:
    """The room each limited memory cgroup holding this process leaves, from its own group upwards."""
    rooms = []
    for directory, version in groups(proc, "memory"):
        limit = read_limit(directory, version)
        if limit is None:
            continue
        usage = read_number(directory / ("memory.current" if version == 2 else "memory.usage_in_bytes"))
        if usage is None:
            continue
        rooms.append(max(0, limit - usage + file_pages(directory, version)))
    return rooms


def read_limit(directory: Path, version: int) -> int | None:
    if version == 2:
        try:
            text = (directory / "memory.max").read_text().strip()
        except OSError:
            return None
        return None if text == "max" else int(text)
    limit = read_number(directory / "memory.limit_in_bytes")
    return None if limit is None or limit >= UNLIMITED else limit


def file_pages(directory: Path, version: int) -> int:
    """The page cache the group holds (v1 counts its subgroups' under total_*)."""
    try:
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines() if " " in line)
    except (OSError, ValueError):
        return 0
    names = ("inactive_file", "active_file") if version == 2 else ("total_inactive_file", "total_active_file")
    return sum(int(stat.get(name, 0)) for name in names)
