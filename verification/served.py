"""The served layout of a traceable revision, written and verified before any copy of it goes out.

Once the published files pass every check, the worker that ran the smoke pass rewrites each shard that
holds carriers with its carriers last (tracing.served.write_served_base: every value kept) under the
revision's `traced/` prefix, then checks the checkpoint as it will be served (the bases in place of
their shards, every other file as published) as strictly as the published one: parse, index, config,
tensors, the smoke pass; and each base's tensors byte for byte against its shard's. Only then is the
layout recorded (TracedRevision: carriers per file, key id, scheme, sizes), and the revision verified.
"""

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from distribution import trace_keys
from distribution.models import Revision, TracedRevision
from distribution.revision_objects import StoredFile, files_in_storage
from distribution.storage import LocalStorage, ObjectChanged, StorageError, get_storage
from tracing.carriers import NoCarriersError
from tracing.keys import SCHEME
from tracing.safetensors_file import read_header, read_raw
from tracing.served import prefix_digest, recordable_prefix_state, write_served_base
from tracing.tracer import choose_carriers
from verification.core.checks import CheckpointFile, UnreadableCheckpoint, check_files
from verification.core.file_tensors import ContentChanged
from verification.core.report import PASS, Report
from verification.core.signature import SIGNATURE_PATH


def local_file(storage, stored: StoredFile, scratch: Path) -> Path:
    """A stored file as a local file: itself on local storage, a copy in `scratch` of its version from S3."""
    if isinstance(storage, LocalStorage):
        return storage.path(stored.key)
    destination = scratch / "published" / stored.key
    destination.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(stored.open(storage)) as source, open(destination, "wb") as out:
        shutil.copyfileobj(source, out, 8 * 1024 * 1024)
    return destination


def prepare_served_layout(
    revision: Revision, report: Report, *, recorded: TracedRevision | None = None, say=lambda line: None
) -> TracedRevision | None:
    """Write and check the served layout; its record (not yet saved) when it passed, None with the
    failures in `report` otherwise. With `recorded` (a layout written before, lost or damaged since) its
    carriers and key are kept and the files written again must be the ones recorded, so that the copies
    already issued stay what their recipients received. `say` is told each step, for a command."""
    key_id = recorded.key_id if recorded else trace_keys.current().key_id
    traced = TracedRevision(revision=revision, scheme=SCHEME, key_id=key_id)
    storage = get_storage(revision.storage_backend)
    stored = files_in_storage(revision).files
    shards = [row.path for row in revision.files.all() if row.path.endswith(".safetensors")]
    if missing := [path for path in shards if path not in stored]:
        report.fail("served", "FileMissing", f"{', '.join(missing)} vanished from storage after it was verified")
        return None
    with tempfile.TemporaryDirectory(prefix="served-") as scratch:
        try:
            local = {path: local_file(storage, stored[path], Path(scratch)) for path in shards}
        except ObjectChanged as error:
            report.fail("served", "ContentChanged", f"a file changed after it was verified: {error}")
            return None
        if recorded:
            chosen = {name for names in recorded.carriers.values() for name in names}
        else:
            try:
                chosen = set(choose_carriers(local, max_fraction=settings.TRACE_CARRIER_PERMILLE / 1000))
            except NoCarriersError as error:
                report.fail("served", "NoCarriers", str(error))
                return None
        traced.carriers, traced.files, prefix_states = {}, {}, {}
        for number, (path, source) in enumerate(local.items(), start=1):
            held = sorted(name for name in read_header(source).entries if name in chosen)
            if not held:
                continue  # served as verified: every recipient's copy of it is the same
            say(f"{path} ({number}/{len(local)}): writing its served base, {len(held)} carrier tensors last")
            base = Path(scratch, "served", path)
            base.parent.mkdir(parents=True, exist_ok=True)
            digest = prefix_digest()
            layout = write_served_base(source, base, path, held, prefix_digest=digest)
            if not same_tensors(source, base):
                report.fail("served", "ServedValuesDiffer", f"the served base of {path} differs from it", path)
                return None
            storage.put_file(traced.storage_key(path), base)
            traced.carriers[path] = held
            traced.files[path] = {"size": layout.size, "prefix_size": layout.prefix_size}
            if digest is not None:
                prefix_states[path] = recordable_prefix_state(digest, base, layout)
    say("checking the checkpoint as served: parse, index, config, tensors, smoke pass")
    bases = storage.stored_objects(traced.storage_prefix) if traced.files else {}
    served = check_served(revision, traced, bases=bases)
    if not passed_as_served(served, report):
        return None
    for path, layout in traced.files.items():
        layout["sha256"] = served.files[path].sha256
        if bases[path].etag:  # the version just checked, which web processes read and stream (S3)
            layout["etag"] = bases[path].etag.strip('"')
        state, gives = prefix_states.get(path, (None, None))
        if gives == layout["sha256"]:  # web processes resume it and hash only tails, never a whole prefix
            layout["prefix_state"] = state
    if recorded and (traced.carriers, as_issued(traced.files)) != (recorded.carriers, as_issued(recorded.files)):
        report.fail(
            "served",
            "ServedLayoutChanged",
            "the served layout written again differs from the one recorded, so the copies issued from it could "
            "not be served as their recipients received them (was the published checkpoint changed?)",
        )
        return None
    weights = sum(1 for names in traced.carriers.values() for _ in names)
    report.add(
        "served",
        PASS,
        "ServedLayoutVerified",
        f"{len(traced.files)} shards served with {weights} carrier tensors last; parse, index, config and "
        "smoke pass on the served layout",
    )
    return traced


def as_issued(files: dict) -> dict:
    """What a layout's copies were issued from, per file: all it records but the prefix's hash state and the
    object's ETag (a layout recorded before either was, or written again, is the same layout with them new)."""
    return {
        path: {k: v for k, v in entry.items() if k not in ("prefix_state", "etag")} for path, entry in files.items()
    }


def passed_as_served(served: Report, report: Report) -> bool:
    """Copy the failures of the checks on the served layout into `report`, as the "served" checks."""
    for check in served.failures:
        report.fail("served", check.code, f"as served: {check.message}", check.file)
    return served.ok


def recheck_served_layout(revision: Revision, traced: TracedRevision, report: Report) -> None:
    """Re-verification of a traceable revision: its served layout as stored now passes every check, and each
    base is still the one recorded, or the copies issued from it are not what their recipients received."""
    rebuild = (
        f"run `manage.py prepare_traceable {revision.repo.repo_id} --revision {revision.commit[:12]}` to write it "
        "again as recorded"
    )
    try:
        # No smoke pass: a base whose sha256 is the one recorded is the one the smoke pass ran on when prepared.
        served = check_served(revision, traced, smoke=False)
    except (OSError, StorageError) as error:
        report.fail("served", "ServedLayoutMissing", f"the served layout cannot be read ({error}): {rebuild}")
        return
    passed = passed_as_served(served, report)
    for path, recorded in traced.files.items():
        found = served.files.get(path)
        if found is not None and (found.size, found.sha256) != (recorded["size"], recorded["sha256"]):
            passed = False
            report.fail(
                "served",
                "ServedLayoutChanged",
                f"the served base of {path} has {found.size} bytes and sha256 {found.sha256[:16]}…, not the "
                f"{recorded['size']} bytes and {recorded['sha256'][:16]}… recorded: {rebuild}",
                path,
            )
    if passed:
        report.add("served", PASS, "ServedLayoutVerified", f"{len(traced.files)} served bases as recorded")


def same_tensors(source: Path, base: Path) -> bool:
    """Every tensor of `base` has the name, dtype, shape and bytes it has in `source`."""
    original, served = read_header(source), read_header(base)
    if original.metadata != served.metadata or original.entries.keys() != served.entries.keys():
        return False
    for name, entry in original.entries.items():
        other = served.entries[name]
        if (entry.dtype, entry.shape) != (other.dtype, other.shape):
            return False
        if (
            hashlib.sha256(read_raw(source, original, entry)).digest()
            != hashlib.sha256(read_raw(base, served, other)).digest()
        ):
            return False
    return True


def check_served(revision: Revision, traced: TracedRevision, *, smoke: bool = True, bases=None) -> Report:
    """Every check (with the smoke pass, unless told not to) on the checkpoint as it is served, read from
    storage; the served bases at the versions in `bases` (a listing of them) when given."""
    storage = get_storage(revision.storage_backend)
    published = files_in_storage(revision).files
    if bases is None:
        bases = storage.stored_objects(traced.storage_prefix) if traced.files else {}
    items = []
    for row in revision.files.exclude(path=SIGNATURE_PATH):
        version = ""
        if row.path in traced.files:
            base = bases.get(row.path)
            key, size, etag = traced.storage_key(row.path), traced.files[row.path]["size"], base.etag if base else ""
        elif row.path in published:
            stored = published[row.path]
            key, size, etag, version = stored.key, row.size, stored.version, stored.version_id
        else:  # gone: reading it fails, and says so
            key, size, etag = row.storage_key, row.size, ""
        one = {"etag": etag, "version": version}
        items.append(CheckpointFile(row.path, size, opener(storage, key, **one), ranger(storage, key, **one)))
    report = Report()
    try:
        check_files(items, report, smoke=smoke, allow_code=revision.repo.allows_code)
    except (UnreadableCheckpoint, ContentChanged) as error:
        report.fail("files", "Unreadable", str(error))
    return report


def opener(storage, key: str, *, etag: str, version: str):
    if isinstance(storage, LocalStorage):
        return lambda: storage.path(key).open("rb")
    return lambda: contextlib.closing(storage.open(key, etag=etag, version=version))


def ranger(storage, key: str, *, etag: str, version: str):
    """Reads of ranges of one version of the object (S3; local files need none)."""
    if isinstance(storage, LocalStorage):
        return None
    return lambda offset, length: storage.read_range(key, offset, length, etag=etag, version=version)
