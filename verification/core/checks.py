"""The checks on one checkpoint. Plain Python: no Django, no network.

A checkpoint is a list of `CheckpointFile`s (a path, a size, a way to open it), so the same checks
run on a local directory and on objects streamed from S3.
"""

import functools
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from machine.cpus import usable_cpus
from verification.core.kinds import refused_kind
from verification.core.layout import INDEX_NAME, is_weight_shard, read_json
from verification.core.model_checks import check_config, run_smoke, smoke_sink
from verification.core.report import PASS, WARN, FileDigest, Report
from verification.core.scan import FileScan, scan_stream


class UnreadableCheckpoint(Exception):
    """The checkpoint itself cannot be read: not a checkpoint failure but bad input (CLI exit 2)."""


class UnreadableFile(UnreadableCheckpoint):
    """One of its files could not be read to the end (gone, or an I/O error) while it was checked."""

    def __init__(self, path: str, error: OSError):
        super().__init__(f"{path} could not be read: {error}")
        self.path = path


@dataclass(frozen=True)
class CheckpointFile:
    path: str  # relative, POSIX
    size: int
    open: Callable[[], BinaryIO]
    # (offset, length) -> exactly those bytes of the version that `open` streams; for a stream that cannot
    # seek (an S3 object), so a streamed smoke pass can read a block's tensors again without reading from 0.
    read_range: Callable[[int, int], bytes] | None = None


@dataclass(frozen=True)
class DirectoryEntry:
    relative: str
    path: Path
    kind: str  # "file", "symlink" or "special"


def walk_checkpoint(root: Path) -> list[DirectoryEntry]:
    """Everything under root but directories, without following links, in a stable order."""
    entries = []
    for folder, subdirs, names in os.walk(root, followlinks=False):
        for name in sorted(subdirs + names):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else None
            if stat.S_ISDIR(mode) and kind is None:
                continue
            entries.append(DirectoryEntry(path.relative_to(root).as_posix(), path, kind or "special"))
    return sorted(entries, key=lambda entry: entry.relative)


def directory_files(root: Path, report: Report) -> list[CheckpointFile]:
    files = []
    for entry in walk_checkpoint(root):
        if entry.kind == "symlink":
            target = os.readlink(entry.path)
            report.fail(
                "files",
                "Symlink",
                f"{entry.relative} is a symbolic link (to {target}); ship the file itself",
                entry.relative,
            )
        elif entry.kind == "special":
            report.fail("files", "NotARegularFile", f"{entry.relative} is not a regular file", entry.relative)
        else:
            files.append(
                CheckpointFile(entry.relative, entry.path.stat().st_size, lambda path=entry.path: path.open("rb"))
            )
    return files


def check_paths(files: list[CheckpointFile], report: Report) -> None:
    for item in files:
        parts = item.path.split("/")
        if item.path.startswith("/") or any(part in ("", ".", "..") for part in parts):
            report.fail(
                "files", "PathEscapes", f"{item.path!r} is not a plain relative path inside the checkpoint", item.path
            )


def check_file_kinds(scans: list[FileScan], report: Report, *, allow_code: bool = False) -> None:
    for scan in scans:
        refused = refused_kind(scan.path, scan.head, allow_code=allow_code)
        if refused is not None:
            report.fail("files", *refused, scan.path)


def check_safetensors_headers(scans: list[FileScan], report: Report) -> None:
    if not any(is_weight_shard(scan.path) for scan in scans):
        report.fail("safetensors", "NoWeights", "the checkpoint holds no .safetensors weights")
    for scan in scans:
        if not scan.path.endswith(".safetensors"):
            continue
        if scan.header_error is not None:
            report.fail("safetensors", scan.header_error.code, scan.header_error.message, scan.path)
        else:
            count = len(scan.header.tensors)
            report.add(
                "safetensors",
                PASS,
                "HeaderValid",
                f"{count} tensors, header of {scan.header.header_length} bytes",
                scan.path,
            )


def check_index(files: dict[str, CheckpointFile], scans: list[FileScan], report: Report) -> None:
    by_path = {scan.path: scan for scan in scans}
    shards = [scan for scan in scans if is_weight_shard(scan.path)]
    if INDEX_NAME not in files:
        if len(shards) > 1:
            report.fail(
                "index", "IndexMissing", f"{len(shards)} shards but no {INDEX_NAME} to say which tensor is where"
            )
        else:
            report.add("index", PASS, "SingleFile", "one weights file, no index needed")
        return
    try:
        index = read_json(files, INDEX_NAME)
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (ValueError, KeyError, TypeError) as error:
        report.fail("index", "IndexInvalid", f"{INDEX_NAME} cannot be used: {error}", INDEX_NAME)
        return
    problems = 0

    def problem(code: str, message: str, file: str = INDEX_NAME) -> None:
        nonlocal problems
        problems += 1
        report.fail("index", code, message, file)

    for shard_name in sorted(set(weight_map.values())):
        if shard_name not in by_path:
            problem("ShardMissing", f"the index names {shard_name}, which is not in the checkpoint")
    located: dict[str, str] = {}
    total_bytes = 0
    for scan in shards:
        if scan.header is None:
            continue
        for name, entry in scan.header.tensors.items():
            total_bytes += entry.nbytes
            if name in located:
                problem("TensorInTwoShards", f"tensor {name!r} is in both {located[name]} and {scan.path}", scan.path)
            located[name] = scan.path
            if name not in weight_map:
                problem("TensorNotInIndex", f"tensor {name!r} is in {scan.path} but not in the index", scan.path)
            elif weight_map[name] != scan.path:
                problem("TensorInWrongShard", f"the index puts {name!r} in {weight_map[name]} but it is in {scan.path}")
    for name, shard_name in weight_map.items():
        shard = by_path.get(shard_name)
        if shard is not None and shard.header is not None and name not in shard.header.tensors:
            problem("TensorMissing", f"the index puts {name!r} in {shard_name}, which does not hold it", shard_name)
    metadata = index.get("metadata")
    declared = metadata.get("total_size") if isinstance(metadata, dict) else None
    if declared is not None and all(scan.header is not None for scan in shards) and declared != total_bytes:
        problem(
            "TotalSizeMismatch", f"the index declares total_size {declared} but the tensors hold {total_bytes} bytes"
        )
    if not problems:
        report.add(
            "index", PASS, "IndexConsistent", f"{len(weight_map)} tensors in {len(set(weight_map.values()))} shards"
        )


def check_tensors(scans: list[FileScan], report: Report) -> None:
    problems = 0
    for scan in scans:
        if not is_weight_shard(scan.path):
            continue
        for stats in scan.tensors:
            report.tensors.append({"file": scan.path, **stats.as_dict()})
            if stats.nan or stats.inf:
                problems += 1
                report.fail(
                    "tensors",
                    "NonFiniteValues",
                    f"tensor {stats.name!r} holds {stats.nan} NaN and {stats.inf} Inf values",
                    scan.path,
                )
            elif stats.all_zero and stats.name.endswith("weight"):
                report.add("tensors", WARN, "AllZeroWeights", f"tensor {stats.name!r} is all zeros", scan.path)
    if not problems:
        count = len(report.tensors)
        report.add("tensors", PASS, "AllFinite", f"{count} tensors scanned: no NaN, no Inf")


def scan_file(item: CheckpointFile, *, sink=None, progress=None) -> FileScan:
    """Read one file once: its digest, header and tensor statistics (and its tensors, into `sink`).

    `progress(item, bytes)`, when given, is called with 0 as the read starts, then after each chunk."""
    file_progress = functools.partial(progress, item) if progress is not None else None
    if file_progress is not None:
        file_progress(0)
    try:
        with item.open() as stream:
            shard_sink = sink if is_weight_shard(item.path) else None
            return scan_stream(item.path, item.size, stream, progress=file_progress, sink=shard_sink)
    except OSError as error:
        raise UnreadableFile(item.path, error) from error


def scan_files(files: list[CheckpointFile], *, sink=None, workers: int | None = None, progress=None) -> list[FileScan]:
    """Read every file once, in parallel: digests, headers, tensor statistics (and tensors, into `sink`).

    `progress(item, bytes)`, when given, is called with 0 as a file's read starts, then after each of its
    chunks, from the reading threads.
    """
    # Hashing and numpy release the GIL, so threads spread the files over the cores; two per core
    # keep every core busy to the end when shard sizes are uneven.
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * usable_cpus())) as pool:
        return list(pool.map(lambda item: scan_file(item, sink=sink, progress=progress), files))


def check_files(
    files: list[CheckpointFile],
    report: Report | None = None,
    *,
    smoke: bool = True,
    workers: int | None = None,
    progress=None,
    allow_code: bool = False,
) -> Report:
    """Run every check on a checkpoint given as files, reading each file once.

    With `smoke`, the tensors are loaded onto the smoke device during that same read, and the
    forward pass runs once every other check has passed. `allow_code` lets Python files and a
    config's `auto_map` through (a repo that ships its own model code).
    """
    report = report or Report()
    check_paths(files, report)
    sink = smoke_sink(files, report) if smoke else None
    scans = scan_files(files, sink=sink, workers=workers, progress=progress)
    judge_scans(files, scans, report, allow_code=allow_code)
    if sink is not None and report.ok:
        run_smoke({item.path: item for item in files}, sink, report)
    return report


def judge_scans(
    files: list[CheckpointFile], scans: list[FileScan], report: Report, *, allow_code: bool = False
) -> None:
    """The checks of the whole checkpoint, from every file's scan: kinds, headers, index, tensors, config.

    The scans may come from this process or from several workers (stored as `FileScan.as_dict`); only
    the small JSON files (index, config) are opened again."""
    by_path = {item.path: item for item in files}
    for result in scans:
        report.files[result.path] = FileDigest(result.path, result.size, result.sha256)
    check_file_kinds(scans, report, allow_code=allow_code)
    check_safetensors_headers(scans, report)
    check_index(by_path, scans, report)
    check_tensors(scans, report)
    if not any(check.name == "files" for check in report.failures):
        report.add("files", PASS, "FilesSafe", f"{len(files)} regular files, no links, no pickle")
    check_config(by_path, scans, report, allow_code=allow_code)


def check_directory(
    root: Path | str, *, smoke: bool = True, workers: int | None = None, progress=None, allow_code: bool = False
) -> Report:
    """Run every check on a checkpoint directory and return the report (`progress` as for `scan_files`)."""
    root = Path(root)
    if not root.is_dir():
        raise UnreadableCheckpoint(f"{root} is not a directory")
    report = Report()
    try:
        files = directory_files(root, report)
    except OSError as error:
        raise UnreadableCheckpoint(f"{root} cannot be read: {error}") from error
    return check_files(files, report, smoke=smoke, workers=workers, progress=progress, allow_code=allow_code)
