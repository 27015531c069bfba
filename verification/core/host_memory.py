"""How much memory this process may still take: the machine's MemAvailable, and no more than its
memory cgroups leave below their limits. A container's limit is not in /proc/meminfo: a CPU worker in a
16 GiB container on a 256 GiB host that planned its smoke pass by MemAvailable would hold a 40 GB model
whole and be killed, again on every retry.

Both cgroup versions are read (v1's memory controller, v2's unified hierarchy), the process's own group
and each group above it up to the mount's root; a group's room is its limit less its usage, plus the
file pages it holds (the page cache, which the kernel reclaims before it kills), as MemAvailable counts.
"""

from pathlib import Path

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
    for directory, version in memory_groups(proc):
        limit = read_limit(directory, version)
        if limit is None:
            continue
        usage = read_number(directory / ("memory.current" if version == 2 else "memory.usage_in_bytes"))
        if usage is None:
            continue
        rooms.append(max(0, limit - usage + file_pages(directory, version)))
    return rooms


def memory_groups(proc: Path):
    """(directory, version) of this process's memory cgroup and of each group above it in the mount."""
    try:
        memberships = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return
    for line in memberships:
        _number, controllers, path = line.split(":", 2)
        version = 2 if controllers == "" else 1
        if version == 1 and "memory" not in controllers.split(","):
            continue
        for mount_root, mount_point in cgroup_mounts(mounts, version):
            relative = path[len(mount_root) :] if path.startswith(mount_root) else path
            group = Path(mount_point, relative.lstrip("/"))
            for directory in (group, *group.parents):
                yield directory, version
                if directory == Path(mount_point):
                    break


def cgroup_mounts(mounts: list[str], version: int) -> list[tuple[str, str]]:
    """(root in the hierarchy, mount point) of the cgroup2 mounts, or of the v1 mounts of the memory controller."""
    found = []
    for line in mounts:
        fields, _, filesystem = line.partition(" - ")
        parts, described = fields.split(), filesystem.split()
        if len(parts) < 5 or len(described) < 3:
            continue
        if (version == 2 and described[0] == "cgroup2") or (
            version == 1 and described[0] == "cgroup" and "memory" in described[2].split(",")
        ):
            found.append((parts[3], parts[4]))
    return found


def read_limit(directory: Path, version: int) -> int | None:
    if version == 2:
        try:
            text = (directory / "memory.max").read_text().strip()
        except OSError:
            return None
        return None if text == "max" else int(text)
    limit = read_number(directory / "memory.limit_in_bytes")
    return None if limit is None or limit >= UNLIMITED else limit


def read_number(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def file_pages(directory: Path, version: int) -> int:
    """The page cache the group holds (v1 counts its subgroups' under total_*)."""
    try:
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines() if " " in line)
    except (OSError, ValueError):
        return 0
    names = ("inactive_file", "active_file") if version == 2 else ("total_inactive_file", "total_active_file")
    return sum(int(stat.get(name, 0)) for name in names)
