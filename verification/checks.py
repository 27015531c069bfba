"""The checks on one checkpoint directory. Plain Python: no Django, no network."""

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from verification.report import PASS, FileDigest, Report
from verification.scan import FileScan, scan_file

INDEX_NAME = "model.safetensors.index.json"
# Weight formats that run code when loaded; they are refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")
PICKLE_PROTOCOL_MARKS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))
ZIP_MAGIC = b"PK\x03\x04"


class UnreadableCheckpoint(Exception):
    """The directory itself cannot be read: not a checkpoint failure but bad input (CLI exit 2)."""


def list_files(root: Path, report: Report) -> list[str]:
    """Every regular file under root as a relative POSIX path; links and special files fail the check."""
    found = []
    for directory, subdirs, names in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in sorted(subdirs + names):
            path = base / name
            relative = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                report.fail(
                    "files", "Symlink", f"{relative} is a symbolic link (to {target}); ship the file itself", relative
                )
            elif stat.S_ISREG(mode):
                found.append(relative)
            elif not stat.S_ISDIR(mode):
                report.fail("files", "NotARegularFile", f"{relative} is not a regular file", relative)
    return sorted(found)


def check_file_kinds(scans: list[FileScan], report: Report) -> None:
    for scan in scans:
        # A safetensors file starts with its header length, which can look like a pickle mark: its
        # own parser judges it. Anything else is sniffed, whatever its name says.
        sniffed = not scan.path.endswith(".safetensors") and scan.head.startswith((*PICKLE_PROTOCOL_MARKS, ZIP_MAGIC))
        if scan.path.lower().endswith(PICKLE_SUFFIXES) or sniffed:
            report.fail(
                "files",
                "PickleWeights",
                f"{scan.path} is a pickle-based file, which can run code when loaded; it was not opened. "
                "Convert the weights to safetensors and publish again.",
                scan.path,
            )


def check_safetensors_headers(scans: list[FileScan], report: Report) -> None:
    shards = [scan for scan in scans if scan.path.endswith(".safetensors")]
    if not shards:
        report.fail("safetensors", "NoWeights", "the directory holds no .safetensors file")
    for scan in shards:
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


def check_index(root: Path, scans: list[FileScan], report: Report) -> None:
    by_path = {scan.path: scan for scan in scans}
    shards = [scan for scan in scans if scan.path.endswith(".safetensors")]
    if INDEX_NAME not in by_path:
        if len(shards) > 1:
            report.fail(
                "index", "IndexMissing", f"{len(shards)} shards but no {INDEX_NAME} to say which tensor is where"
            )
        return
    try:
        index = json.loads((root / INDEX_NAME).read_text(encoding="utf-8"))
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
    declared = index.get("metadata", {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    if declared is not None and all(scan.header is not None for scan in shards) and declared != total_bytes:
        problem(
            "TotalSizeMismatch", f"the index declares total_size {declared} but the tensors hold {total_bytes} bytes"
        )
    if not problems:
        report.add(
            "index", PASS, "IndexConsistent", f"{len(weight_map)} tensors in {len(set(weight_map.values()))} shards"
        )


def check_directory(root: Path | str, *, workers: int | None = None) -> Report:
    """Run every check on a checkpoint directory and return the report."""
    root = Path(root)
    if not root.is_dir():
        raise UnreadableCheckpoint(f"{root} is not a directory")
    report = Report()
    try:
        paths = list_files(root, report)
    except OSError as error:
        raise UnreadableCheckpoint(f"{root} cannot be read: {error}") from error
    # Hashing releases the GIL, so threads spread the reads over the cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        scans = list(pool.map(lambda relative: scan_file(root, relative), paths))
    for scan in scans:
        report.files[scan.path] = FileDigest(scan.path, scan.size, scan.sha256)
    check_file_kinds(scans, report)
    check_safetensors_headers(scans, report)
    check_index(root, scans, report)
    if not any(check.name == "files" for check in report.failures):
        report.add("files", PASS, "FilesSafe", f"{len(paths)} regular files, no links, no pickle")
    return report
