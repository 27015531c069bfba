"""The Django side of verification: run the plain-Python checks on a stored revision, record the result.

A revision is verified in stages, each claimed with a conditional update: its files, each checked
by whichever verify worker takes it (queue `verify`) and stored as soon as it is done; the checks of
the whole checkpoint, from those stored scans, by the worker that finishes the last file; then the
smoke pass (queue `gpu`). The worker holding a file or a stage writes a heartbeat; one whose
heartbeat went silent belongs to a dead worker, and the periodic job hands it to another, while the
files already checked stay checked. Which task runs next is verification.tasks'
concern: these functions only say where a revision stands.
"""

import contextlib
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from audit.chain import record
from audit.tags import Tag
from distribution.models import Revision, RevisionFile, TracedRevision, beating
from distribution.revision_objects import InStorage, file_in_storage, files_in_storage
from distribution.storage import LocalStorage, ObjectChanged, StorageError, get_storage
from verification.core.checks import (
    CheckpointFile,
    UnreadableCheckpoint,
    UnreadableFile,
    check_files,
    check_paths,
    directory_files,
    judge_scans,
    scan_file,
    scan_files,
)
from verification.core.file_tensors import ContentChanged
from verification.core.model_checks import run_smoke, smoke_sink
from verification.core.report import WARN, FileDigest, Report
from verification.core.scan import FileScan
from verification.core.signature import SIGNATURE_PATH, is_signed_path, read_signature, sign_digests
from verification.models import CheckResult, FileCheck, SigningKey, VerificationRun
from verification.served import prepare_served_layout, recheck_served_layout
from verification.signing import current_key

log = logging.getLogger(__name__)
Stage = Revision.Stage
State = Revision.State


def stale_before():
    return timezone.now() - timedelta(seconds=settings.VERIFY_STALE_SECONDS)


def claim(revision_id: int, stage: str) -> Revision | None:
    """Take one stage of a revision for this worker, or None when another worker has it or it is done."""
    free = Q(verification_heartbeat_at__isnull=True) | Q(verification_heartbeat_at__lt=stale_before())
    if stage == Stage.CHECKS:
        claimable = Q(state=State.UPLOADED) | (Q(state=State.VERIFYING, verification_stage=Stage.CHECKS) & free)
    else:
        claimable = Q(state=State.VERIFYING) & (
            Q(verification_stage=Stage.SMOKE_QUEUED) | (Q(verification_stage=Stage.SMOKE) & free)
        )
    now = timezone.now()
    fields = {"state": State.VERIFYING, "verification_stage": stage, "verification_heartbeat_at": now}
    if stage == Stage.CHECKS:
        fields["verification_started_at"] = now
    claimed = Revision.objects.filter(claimable, pk=revision_id).update(**fields)
    return Revision.objects.select_related("repo").get(pk=revision_id) if claimed else None


def heartbeat(revision: Revision, file_check: FileCheck | None = None):
    """Keep the claim alive from a side thread while the (long) stage runs: the revision's, and the
    file's when one file is being checked (a live file keeps its revision from looking abandoned)."""
    alive = Revision.objects.filter(pk=revision.pk, state=State.VERIFYING)
    checking = FileCheck.objects.filter(pk=file_check.pk, state=FileCheck.State.CHECKING) if file_check else None

    def touch() -> None:
        now = timezone.now()
        alive.update(verification_heartbeat_at=now)
        if checking is not None:
            checking.update(heartbeat_at=now)

    return beating(touch, every=settings.VERIFY_HEARTBEAT_SECONDS, name=f"heartbeat-{revision.pk}")


def release_claim(revision: Revision) -> None:
    """After a transient error: leave the stage to the retry (or the periodic job) at once."""
    Revision.objects.filter(pk=revision.pk, state=State.VERIFYING).update(verification_heartbeat_at=None)


def stored_files(revision: Revision, report: Report, in_storage: InStorage | None = None) -> list[CheckpointFile]:
    """The revision's files as they are in storage now (under its prefix, or referred to where they were
    uploaded; a verified file at the version verified), opened as streams: no local copy needed."""
    storage = get_storage(revision.storage_backend)
    rows = {row.path: row for row in revision.files.all()}
    in_storage = in_storage or files_in_storage(revision, rows.values())
    report_misplaced(in_storage, rows, report)
    if isinstance(storage, LocalStorage):
        # The prefix is walked rather than listed, so that links and special files in it are reported.
        walked = directory_files(storage.path(revision.storage_prefix), report)
        under_prefix = [item for item in walked if item.path not in rows or not rows[item.path].object_key]
        referenced = [
            CheckpointFile(stored.path, stored.size, lambda key=stored.key: storage.open(key))
            for stored in in_storage.files.values()
            if stored.referenced
        ]
        return sorted(under_prefix + referenced, key=lambda item: item.path)
    # Each object is read at one version (the one verified, referred to, or listed), so bytes read again for a
    # streamed smoke pass are the ones hashed: a replaced object fails as ContentChanged, never as other weights.
    return [
        CheckpointFile(
            stored.path,
            stored.size,
            lambda stored=stored: contextlib.closing(versioned(stored.open, storage)),
            lambda offset, length, stored=stored: versioned(stored.read_range, storage, offset, length),
        )
        for stored in sorted(in_storage.files.values(), key=lambda stored: stored.path)
    ]


def report_misplaced(in_storage: InStorage, rows: dict[str, RevisionFile], report: Report) -> None:
    """A referenced object replaced since its commit, and an object under the prefix where a referenced file
    stands, fail: neither is what was published, whatever its bytes."""
    for path in in_storage.strays:
        report.fail(
            "files", "UnexpectedFile", f"{path} is under the revision's prefix, but was not published there", path
        )
    for stored in in_storage.files.values():
        if stored.written_over:
            report.add(
                "files",
                WARN,
                "WrittenOver",
                f"{stored.key} was written over or deleted after {stored.path} was verified; the bucket keeps the "
                f"verified version ({stored.version_id}), which was read and which links serve. Find out who "
                "wrote to the key (the bucket's access log), then put that version back as the current one",
                stored.path,
            )
        if stored.replaced:
            code = "SizeChanged" if stored.size != rows[stored.path].size else "ContentChanged"
            report.fail(
                "files",
                code,
                f"{stored.path} was replaced in storage ({stored.key}, now {stored.size} bytes) after it was committed",
                stored.path,
            )


def versioned(read, *args, **kwargs):
    """`read(...)` of one version of an object; the verification core's ContentChanged if it was replaced."""
    try:
        return read(*args, **kwargs)
    except ObjectChanged as error:
        raise ContentChanged(str(error)) from error


def check_against_record(revision: Revision, report: Report) -> None:
    """The stored files must be exactly those published (and, once known, with the same sha256)."""
    recorded = {stored.path: stored for stored in revision.files.all()}
    for path, digest in report.files.items():
        stored = recorded.get(path)
        if stored is None:
            report.fail("files", "UnexpectedFile", f"{path} is in storage but was not published", path)
        elif digest.size != stored.size:
            report.fail("files", "SizeChanged", f"{path} has {digest.size} bytes, {stored.size} were published", path)
        elif stored.sha256 and digest.sha256 != stored.sha256:
            report.fail(
                "files",
                "ContentChanged",
                f"{path} no longer has the sha256 it was verified with ({stored.sha256[:16]}…)",
                path,
            )
        elif stored.upload_sha256 and digest.sha256 != stored.upload_sha256:
            report.fail(
                "files",
                "ContentChanged",
                f"{path} is not the file that was published (which had sha256 {stored.upload_sha256[:16]}…)",
                path,
            )
    for path in recorded.keys() - report.files.keys():
        report.fail("files", "FileMissing", f"{path} was published but is not in storage", path)


def save_checks(run: VerificationRun, report: Report, *, names: tuple[str, ...] | None = None) -> None:
    checks = [c for c in report.checks if names is None or c.name in names]
    CheckResult.objects.bulk_create(
        CheckResult(
            revision=run.revision, run=run, name=c.name, status=c.status, code=c.code, file=c.file, message=c.message
        )
        for c in checks
    )


def summary(report: Report) -> str:
    reasons = "; ".join(f"{c.file or c.name}: {c.message}" for c in report.failures[:5])
    more = len(report.failures) - 5
    return reasons + (f"; and {more} more" if more > 0 else "")


def checks_on_storage(revision: Revision, *, smoke: bool, progress=None, in_storage: InStorage | None = None) -> Report:
    """Every check on the stored bytes, streamed: one read per file, with the smoke pass when asked."""
    report = Report()
    in_storage = in_storage or files_in_storage(revision)
    files = stored_files(revision, report, in_storage)
    try:
        check_files(files, report, smoke=smoke, allow_code=revision.repo.allows_code, progress=progress)
    except UnreadableCheckpoint as error:
        report.fail("files", "Unreadable", str(error), getattr(error, "path", ""))
        return report  # the files not read yet are neither missing nor changed: nothing more to judge
    except ContentChanged as error:
        report.fail("files", "ContentChanged", f"a file changed while it was read: {error}")
        return report
    check_against_record(revision, report)
    check_signature(revision, report, in_storage)
    return report


def check_signature(revision: Revision, report: Report, in_storage: InStorage) -> None:
    """model.sig must still be the portal's signature of exactly the bytes just hashed.

    This catches what a matching database row would hide: bytes and recorded sha256 changed together.
    It is read as found with the other files (`in_storage`): at the version links serve.
    """
    if not revision.files.filter(path=SIGNATURE_PATH).exists():
        return  # verified before releases were signed
    stored = in_storage.files.get(SIGNATURE_PATH)
    if stored is None:
        return  # the comparison with the record reports it missing
    try:
        with contextlib.closing(stored.open(get_storage(revision.storage_backend))) as handle:
            bundle = handle.read()
        hint = json.loads(bundle)["verificationMaterial"]["publicKey"]["hint"]
        key = SigningKey.objects.filter(fingerprint=hint).first()
        if key is None:
            raise ValueError(f"it names a key the portal never signed with ({str(hint)[:16]}…)")
        signed = read_signature(bundle, key.public_pem.encode())
    except (ValueError, KeyError, TypeError, ObjectChanged) as error:  # ObjectChanged: written over as it was read
        report.fail("signature", "SignatureInvalid", f"{SIGNATURE_PATH} cannot be trusted: {error}", SIGNATURE_PATH)
        return
    hashed = {path: digest.sha256 for path, digest in report.files.items() if is_signed_path(path)}
    differing = sorted(path for path in signed.keys() | hashed.keys() if signed.get(path) != hashed.get(path))
    if differing:
        report.fail(
            "signature", "SignatureMismatch", f"the signed release differs in {', '.join(differing)}", differing[0]
        )
    else:
        report.add(
            "signature", "pass", "SignatureValid", f"every file matches {SIGNATURE_PATH} (key {key.fingerprint[:16]}…)"
        )


def smoke_checks(revision: Revision, report: Report) -> None:
    """The smoke pass on the GPU worker: load the stored bytes while hashing them again, so the model
    runs on exactly the bytes the checks verified, then the forward pass."""
    files = stored_files(revision, report)
    sink = smoke_sink(files, report)
    if sink is None:
        return
    try:
        scans = scan_files(files, sink=sink)
    except ContentChanged as error:
        report.fail("smoke", "ContentChanged", f"a file changed after it was verified: {error}")
        return
    except UnreadableFile as error:  # gone or failing since stage one read it: the verdict says which
        gone = f"gone or unreadable since the checks read it ({error.__cause__})"
        report.fail("smoke", "Unreadable", gone, error.path)
        return
    for scan in scans:
        verified = report.files.get(scan.path)
        if verified is None or verified.sha256 != scan.sha256:
            report.fail("smoke", "ContentChanged", f"{scan.path} changed after it was verified", scan.path)
    if report.ok:
        run_smoke({item.path: item for item in files}, sink, report)


def start_checks(revision_id: int) -> list[str] | None:
    """Stage one begins: claim the revision and list its stored files, one FileCheck each (kept across
    retries). The paths still to check; None when another worker holds the stage or it is done."""
    revision = claim(revision_id, Stage.CHECKS)
    if revision is None:
        return None
    try:
        files = stored_files(revision, Report())  # links and special files are reported by the judge
    except StorageError:
        release_claim(revision)
        raise
    reused = reusable_checks(revision, {item.path: item.size for item in files})
    FileCheck.objects.bulk_create(
        [reused.get(item.path) or FileCheck(revision=revision, path=item.path, size=item.size) for item in files],
        ignore_conflicts=True,
    )
    return list(revision.file_checks.exclude(state=FileCheck.State.DONE).values_list("path", flat=True))


def reusable_checks(revision: Revision, sizes: dict[str, int]) -> dict[str, FileCheck]:
    """The files whose sha256 is known since they arrived (a Hub commit's, a publish with --expect-sha256)
    and that an earlier revision of the repo already checked with that sha256 and size: their digest,
    header and tensor scan are copied, done, and never read again. The checks of the whole checkpoint
    still judge them."""
    rows = {row.path: row for row in revision.files.exclude(upload_sha256="").filter(path__in=sizes.keys())}
    arrived = {path: row.upload_sha256 for path, row in rows.items()}
    earlier: dict[tuple[str, int], FileCheck] = {}
    done = FileCheck.objects.filter(
        revision__repo_id=revision.repo_id, state=FileCheck.State.DONE, sha256__in=set(arrived.values())
    )
    for check in done.exclude(revision=revision).select_related("revision").order_by("-finished_at", "-id"):
        if "unreadable" not in check.scan:
            earlier.setdefault((check.sha256, check.size), check)
    reused = {}
    for path, sha256 in arrived.items():
        source = earlier.get((sha256, sizes[path]))
        if source is not None:
            reused[path] = FileCheck(
                revision=revision,
                path=path,
                size=sizes[path],
                state=FileCheck.State.DONE,
                sha256=sha256,
                version_id=version_if_same_object(source, rows[path]),
                scan={**source.scan, "path": path},
                checked_by=f"reused: {source.path} of {source.revision.commit}",
                finished_at=timezone.now(),
            )
    return reused


def version_if_same_object(source: FileCheck, row: RevisionFile) -> str:
    """The VersionId an earlier check read, where `row` refers to that very object (a Hub commit carrying the
    file forward in place); "" for a copy elsewhere, whose version was never read."""
    if not source.version_id:
        return ""
    earlier = source.revision.files.filter(path=source.path).first()
    return source.version_id if earlier is not None and earlier.storage_key == row.storage_key else ""


def claim_file(revision_id: int, path: str, worker: str) -> FileCheck | None:
    """Take one file of a revision being checked, or None when another worker has it or it is done."""
    free = Q(state=FileCheck.State.PENDING) | Q(state=FileCheck.State.CHECKING, heartbeat_at__lt=stale_before())
    with transaction.atomic():
        check = (
            FileCheck.objects.select_for_update()
            .filter(free, revision_id=revision_id, path=path)
            .filter(revision__state=State.VERIFYING, revision__verification_stage=Stage.CHECKS)
            .first()
        )
        if check is None:
            return None
        check.state, check.heartbeat_at, check.checked_by = FileCheck.State.CHECKING, timezone.now(), worker
        check.claims = F("claims") + 1
        check.save(update_fields=["state", "heartbeat_at", "checked_by", "claims"])
    check.refresh_from_db()
    return check


def check_stored_file(revision_id: int, path: str, *, worker: str = "") -> FileCheck | None:
    """One file of stage one, on any verify worker: its digest, header and tensor scan, stored at once.

    None when another worker holds the file, it is done, or the revision is no longer being checked."""
    check = claim_file(revision_id, path, worker)
    if check is None:
        return None
    revision = Revision.objects.select_related("repo").get(pk=revision_id)
    storage = get_storage(revision.storage_backend)
    try:
        with heartbeat(revision, check):
            stored = file_in_storage(revision, path)
            if stored is None:
                raise FileNotFoundError(f"{path} is not in storage")
            # Read at the version found (a referenced file's: the one its commit referred to), never another;
            # in a bucket that keeps versions, by its VersionId, which is recorded for the links.
            version = stored.version_id
            opened = functools.partial(versioned, stored.open, storage)
            scanned = scan_file(CheckpointFile(path, check.size, lambda: contextlib.closing(opened()))).as_dict()
    except StorageError:
        FileCheck.objects.filter(pk=check.pk, claims=check.claims).update(state=FileCheck.State.PENDING)
        raise
    except UnreadableFile as error:  # gone or failing while read: the judge reports it
        scanned, version = {"unreadable": str(error)}, ""
    except (OSError, ContentChanged) as error:  # not in storage, or changed while read
        scanned, version = {"unreadable": f"{path} could not be read: {error}"}, ""
    # Only the claim this worker holds: a worker that lost it (silent too long) stores nothing.
    FileCheck.objects.filter(pk=check.pk, state=FileCheck.State.CHECKING, claims=check.claims).update(
        state=FileCheck.State.DONE,
        sha256=scanned.get("sha256", ""),
        version_id=version,
        scan=scanned,
        finished_at=timezone.now(),
    )
    return check


def finish_checks(revision_id: int) -> Revision | None:
    """Once every file is checked, the checks of the whole checkpoint, by the one worker that claims them.

    The revision is returned `smoke-queued` when everything passed, failed otherwise; None while files
    remain or when another worker judges."""
    if FileCheck.objects.filter(revision_id=revision_id).exclude(state=FileCheck.State.DONE).exists():
        return None
    judging = Revision.objects.filter(pk=revision_id, state=State.VERIFYING, verification_stage=Stage.CHECKS)
    if not judging.update(verification_stage=Stage.JUDGING, verification_heartbeat_at=timezone.now()):
        return None
    revision = Revision.objects.select_related("repo").get(pk=revision_id)
    try:
        with heartbeat(revision):
            report = judged_checks(revision)
    except StorageError:
        Revision.objects.filter(pk=revision.pk, verification_stage=Stage.JUDGING).update(
            verification_stage=Stage.CHECKS, verification_heartbeat_at=None
        )
        raise
    record_checks(revision, report)
    log.info("revision %s: checks %s", revision, "passed" if report.ok else "failed")
    return revision


def judged_checks(revision: Revision) -> Report:
    """The checks of the whole checkpoint from the stored scans of its files (no shard is read again)."""
    report = Report()
    in_storage = files_in_storage(revision)
    files = stored_files(revision, report, in_storage)
    check_paths(files, report)
    checks = list(revision.file_checks.all())
    changed = {item.path for item in files} ^ {check.path for check in checks}
    for path in sorted(changed):
        report.fail("files", "ChangedWhileVerified", f"{path} appeared or vanished while the files were checked", path)
    for check in checks:
        if "unreadable" in check.scan:
            report.fail("files", "Unreadable", check.scan["unreadable"], check.path)
    scans = [FileScan.from_dict(check.scan) for check in checks if "unreadable" not in check.scan]
    judge_scans(files, scans, report, allow_code=revision.repo.allows_code)
    check_against_record(revision, report)
    check_signature(revision, report, in_storage)
    return report


def record_checks(revision: Revision, report: Report) -> None:
    """Stage one's verdict: the run and its results, each file's sha256 and the S3 version read, and the
    revision moved on; nothing when the revision stopped being verified meanwhile (a newer commit superseded
    it)."""
    with transaction.atomic():
        if not still_verifying(revision):
            return
        run = VerificationRun.objects.create(revision=revision, report=report.as_dict())
        save_checks(run, report)
        versions = dict(revision.file_checks.values_list("path", "version_id"))
        for stored in revision.files.all():
            digest = report.files.get(stored.path)
            verified = (digest.sha256, versions.get(stored.path, "")) if digest is not None else None
            if verified is not None and (stored.sha256, stored.stored_version) != verified:
                stored.sha256, stored.stored_version = verified
                stored.save(update_fields=["sha256", "stored_version"])
        if not report.ok:
            run.ok, run.finished_at = False, timezone.now()
            run.save(update_fields=["ok", "finished_at"])
            revision.move(State.FAILED, failure_reason=summary(report), verification_stage=Stage.NONE)
        else:
            Revision.objects.filter(pk=revision.pk).update(verification_stage=Stage.SMOKE_QUEUED)
            revision.verification_stage = Stage.SMOKE_QUEUED


def still_verifying(revision: Revision) -> bool:
    """Whether the revision is still being verified, its row locked until the transaction ends so that a
    newer commit superseding it waits for what this worker stores, or this worker stores nothing."""
    return Revision.objects.select_for_update().filter(pk=revision.pk, state=State.VERIFYING).exists()


def run_checks_stage(revision_id: int) -> Revision | None:
    """Stage one in this process, file after file (what the verify workers share out between them)."""
    pending = start_checks(revision_id)
    if pending is None:
        return None
    for path in pending:
        check_stored_file(revision_id, path)
    return finish_checks(revision_id)


def run_smoke_stage(revision_id: int) -> Revision | None:
    """Stage two, on a GPU worker when there is one: the smoke pass; then verified or failed."""
    revision = claim(revision_id, Stage.SMOKE)
    if revision is None:
        return None
    run = revision.runs.filter(kind=VerificationRun.Kind.PUBLISH).first()
    report = Report()
    report.files = {d["path"]: FileDigest(**d) for d in run.report.get("files", [])}
    try:
        with heartbeat(revision):
            smoke_checks(revision, report)
            traced = prepare_served_layout(revision, report) if report.ok and revision.repo.traceable else None
            signature = store_signature(revision) if report.ok else None
    except StorageError:
        release_claim(revision)
        raise
    with transaction.atomic():
        if not still_verifying(revision):
            return revision
        run.checks.filter(name__in=("smoke", "served")).delete()
        save_checks(run, report, names=("smoke", "served"))
        run.report = {**run.report, "smoke": report.smoke}
        run.ok, run.finished_at = report.ok, timezone.now()
        run.save(update_fields=["report", "ok", "finished_at"])
        if report.ok:
            if revision.move(
                State.VERIFIED, verified_at=timezone.now(), failure_reason="", verification_stage=Stage.NONE
            ):
                RevisionFile.objects.update_or_create(revision=revision, path=SIGNATURE_PATH, defaults=signature)
                if traced is not None:
                    TracedRevision.objects.filter(revision=revision).delete()
                    traced.save()
        else:
            revision.move(State.FAILED, failure_reason=summary(report), verification_stage=Stage.NONE)
    log.info("revision %s: %s", revision, revision.state)
    return revision


def store_signature(revision: Revision) -> dict:
    """Sign the verified files' sha256 values (no second read) and store the bundle as the revision's model.sig;
    its row's fields, with the version stored (links to it name that version, as to every verified file)."""
    private_key, _ = current_key()
    files = [stored for stored in revision.files.all() if is_signed_path(stored.path)]
    unknown = [stored.path for stored in files if not stored.sha256]
    if unknown:
        raise ValueError(f"cannot sign {revision}: no sha256 recorded for {', '.join(unknown)}")
    signature = sign_digests(revision.repo.repo_id, {stored.path: stored.sha256 for stored in files}, private_key)
    stored = get_storage(revision.storage_backend).put_bytes(f"{revision.storage_prefix}/{SIGNATURE_PATH}", signature)
    return {
        "size": len(signature),
        "sha256": hashlib.sha256(signature).hexdigest(),
        "stored_etag": stored.etag.strip('"'),
        "stored_version": stored.version,
    }


def fail_verification(revision_id: int, reason: str) -> None:
    revision = Revision.objects.filter(pk=revision_id, state=State.VERIFYING).first()
    if revision is not None:
        revision.move(State.FAILED, failure_reason=reason, verification_stage=Stage.NONE)


def reverify(revision: Revision, progress=None) -> VerificationRun:
    """Check a verified or released revision's stored bytes again, in this process.

    A traceable revision's served layout is checked too, and each base must be the one its copies were
    issued from. A failure withdraws a released revision (downloads stop at once) and fails a verified one.
    `progress(item, bytes)` follows the reads, as `scan_files` calls it.
    """
    if revision.state not in (State.VERIFIED, State.RELEASED):
        raise ValueError(
            f"revision {revision.commit} is {revision.state}: only verified or released revisions "
            "are re-verified (publish a new revision instead)"
        )
    run = VerificationRun.objects.create(revision=revision, kind=VerificationRun.Kind.REVERIFY)
    try:
        in_storage = files_in_storage(revision)
        report = checks_on_storage(revision, smoke=True, progress=progress, in_storage=in_storage)
        traced = TracedRevision.objects.filter(revision=revision).first() if revision.repo.traceable else None
        if traced is not None:  # what its recipients are served is checked too
            recheck_served_layout(revision, traced, report)
    except BaseException:  # storage out of reach, or interrupted: no run left half-done; run it again
        run.delete()
        raise
    with transaction.atomic():
        save_checks(run, report)
        run.report, run.ok, run.finished_at = report.as_dict(), report.ok, timezone.now()
        run.save(update_fields=["report", "ok", "finished_at"])
        if not report.ok:
            reason = f"re-verification failed: {summary(report)}"
            if revision.state == State.RELEASED:
                revision.move(State.WITHDRAWN, withdrawn_at=timezone.now(), failure_reason=reason)
            else:
                revision.move(State.FAILED, failure_reason=reason)
        else:
            record_versions_read(revision, in_storage)
    return run


def record_versions_read(revision: Revision, in_storage: InStorage) -> None:
    """After a pass: each file's S3 version as just read and hashed, where it differs from the one recorded (a
    bucket restored by copying gives every object a new VersionId; rows verified before versions were
    recorded have none), and its ETag where none was recorded (a model.sig stored before they were), so that
    links name them again rather than rest on the ETag or the size."""
    for row in revision.files.all():
        found = in_storage.files.get(row.path)
        if found is None:
            continue
        read = {"stored_version": found.version_id or row.stored_version, "stored_etag": row.stored_etag or found.etag}
        changed = {name: value.strip('"') for name, value in read.items() if value.strip('"') != getattr(row, name)}
        if changed:
            RevisionFile.objects.filter(pk=row.pk).update(**changed)


def prepare_traceable(revision: Revision, *, say=lambda line: None) -> Report:
    """Write and verify the served layout of a verified or released revision of a traceable repo, in this
    process (the smoke pass needs the worker extra): for a repo marked traceable after the revision was
    verified, or a served layout lost from storage since (rebuilt with its recorded carriers and key, and
    it must come out the same). The "served" checks of the revision's verification are replaced by these;
    the layout is recorded only when every check passed. ValueError for a revision it does not apply to."""
    if not revision.repo.traceable:
        raise ValueError(
            f"{revision.repo.repo_id} is not traceable: mark it in the admin (Repo.traceable) first; its "
            "revisions are served as published until then"
        )
    if revision.state not in (State.VERIFIED, State.RELEASED):
        raise ValueError(
            f"revision {revision.commit} is {revision.state}: only a verified or released revision gets a served "
            "layout (a new one gets it when its verification passes)"
        )
    recorded = TracedRevision.objects.filter(revision=revision).first()
    report = Report()
    traced = prepare_served_layout(revision, report, recorded=recorded, say=say)
    run = revision.runs.filter(kind=VerificationRun.Kind.PUBLISH).first()
    with transaction.atomic():
        if run is not None:
            run.checks.filter(name="served").delete()
            save_checks(run, report, names=("served",))
        if traced is not None and recorded is None:
            traced.save()
        elif traced is not None and traced.files != recorded.files:  # the same layout, its prefix states now taken
            recorded.files = traced.files
            recorded.save(update_fields=["files"])
        if traced is not None:
            record(
                Tag.SERVED_LAYOUT_PREPARED,
                repo=revision.repo,
                commit=revision.commit,
                files=sorted(traced.files),
                key_id=traced.key_id,
                rebuilt=recorded is not None,
            )
    return report


@dataclass(frozen=True)
class Stalled:
    """Work whose worker died or whose message was lost: a stage of a revision, or one of its files."""

    revision: Revision
    stage: str  # "checks", "smoke", or "file" (then `path` names it)
    path: str = ""


def stalled_work() -> list[Stalled]:
    """Every stage or file whose verification stalled (a lost message or a dead worker); each claim is
    freed, so the work can be sent again at once. Files already checked stay checked."""
    close_old_connections()
    stale = stale_before()
    # A queued stage waits for a free worker, which may take long: only a lost message is re-sent.
    lost = timezone.now() - timedelta(seconds=settings.VERIFY_TIME_LIMIT_SECONDS)
    silent = Q(verification_heartbeat_at__isnull=True) | Q(verification_heartbeat_at__lt=stale)
    # A file being checked is handed over on its own (below); its revision is not sent again for it.
    holding_a_file = Exists(FileCheck.objects.filter(revision=OuterRef("pk"), state=FileCheck.State.CHECKING))
    # For each stalled stage: which revisions, and how to free the claim for the stage sent again.
    stuck = [
        (
            Stage.CHECKS,
            Q(state=State.UPLOADED, created_at__lt=stale)
            | (
                Q(state=State.VERIFYING, verification_stage__in=(Stage.CHECKS, Stage.JUDGING))
                & silent
                & ~Q(holding_a_file)
            ),
            # a judge that died leaves the files checked: the next claim finds none to do, and judges
            {"verification_stage": Stage.CHECKS, "verification_heartbeat_at": None},
        ),
        (
            Stage.SMOKE,
            Q(state=State.VERIFYING)
            & (
                (Q(verification_stage=Stage.SMOKE) & silent)
                | Q(verification_stage=Stage.SMOKE_QUEUED, verification_heartbeat_at__lt=lost)
            ),
            # queued again, with a fresh time so the job does not send it twice before it is taken
            {"verification_stage": Stage.SMOKE_QUEUED, "verification_heartbeat_at": timezone.now()},
        ),
    ]
    stalled = []
    for stage, condition, reset in stuck:
        for revision in Revision.objects.filter(condition):
            # An upload never claimed keeps its stage; only its message is sent again.
            unclaimed = revision.state == State.UPLOADED
            Revision.objects.filter(pk=revision.pk).update(
                **({"verification_heartbeat_at": None} if unclaimed else reset)
            )
            log.warning("re-queueing the %s of %s, which stalled", stage, revision)
            stalled.append(Stalled(revision, stage))
    abandoned = FileCheck.objects.filter(
        state=FileCheck.State.CHECKING,
        heartbeat_at__lt=stale,
        revision__state=State.VERIFYING,
        revision__verification_stage=Stage.CHECKS,
    ).select_related("revision")
    for check in abandoned:
        if FileCheck.objects.filter(pk=check.pk, claims=check.claims).update(state=FileCheck.State.PENDING):
            log.warning("re-queueing %s of %s, whose worker went silent", check.path, check.revision)
            stalled.append(Stalled(check.revision, "file", check.path))
    return stalled
