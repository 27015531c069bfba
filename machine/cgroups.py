"""The cgroups holding this process, from /proc/self/cgroup and /proc/self/mountinfo: v1 hierarchies (one
per controller) and v2's unified one, each group with the groups above it, since any of them may hold the
tightest limit (a Kubernetes pod's limit is on the pod's group, its container's below it)."""

from collections.abc import Iterator
from pathlib import Path


def read_number(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def groups(proc: Path, controller: str) -> Iterator[tuple[Path, int]]:
    """(directory, version) of this process's cgroup for `controller` and of each group above it in its mount."""
    try:
        memberships = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return
    for line in memberships:
        _number, controllers, path = line.split(":", 2)
        version = 2 if controllers == "" else 1
        if version == 1 and controller not in controllers.split(","):
            continue
        for mount_root, mount_point in cgroup_mounts(mounts, version, controller):
            relative = path[len(mount_root) :] if path.startswith(mount_root) else path
            group = Path(mount_point, relative.lstrip("/"))
            for directory in (group, *group.parents):
                yield directory, version
                if directory == Path(mount_point):
                    break


def cgroup_mounts(mounts: list[str], version: int, controller: str) -> list[tuple[str, str]]:
    """(root in the hierarchy, mount point) of the cgroup2 mounts, or of the v1 mounts of `controller`."""
    found = []
    for line in mounts:
        fields, _, filesystem = line.partition(" - ")
        parts, described = fields.split(), filesystem.split()
        if len(parts) < 5 or len(described) < 3:
            continue
        if (version == 2 and described[0] == "cgroup2") or (
            version == 1 and described[0] == "cgroup" and controller in described[2].split(",")
        ):
            found.append((parts[3], parts[4]))
    return found
