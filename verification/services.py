"""The Django side of verification: run the plain-Python checks on a stored revision, record the result."""

import logging
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from distribution.models import Revision
from distribution.storage import LocalStorage, StorageError, get_storage
from verification.checks import UnreadableCheckpoint, check_directory
from verification.models import CheckResult
from verification.report import Report

log = logging.getLogger(__name__)


def claim_for_verification(revision_id: int) -> Revision | None:
    """Take the revision for this worker, or None if another has it or it is done.

    A revision left in `verifying` longer than the task's hard limit belongs to a dead worker, and one
    released after a storage error belongs to nobody: both may be taken again. Anything else is
    claimed by exactly one caller (conditional update).
    """
    stale_before = timezone.now() - timedelta(seconds=settings.VERIFY_TIME_LIMIT_SECONDS + 60)
    claimed = Revision.objects.filter(
        Q(state=Revision.State.UPLOADED)
        | Q(state=Revision.State.VERIFYING, verification_started_at__isnull=True)
        | Q(state=Revision.State.VERIFYING, verification_started_at__lt=stale_before),
        pk=revision_id,
    ).update(state=Revision.State.VERIFYING, verification_started_at=timezone.now())
    return Revision.objects.select_related("repo").get(pk=revision_id) if claimed else None


@contextmanager
def staged_checkpoint(revision: Revision):
    """A local directory holding the revision's files: the storage folder itself, or a temporary copy."""
    storage = get_storage(revision.storage_backend)
    if isinstance(storage, LocalStorage):
        yield storage.path(revision.storage_prefix)
        return
    with tempfile.TemporaryDirectory(prefix="weightgate-verify-") as scratch:
        root = Path(scratch)
        for stored in revision.files.all():
            target = root / stored.path
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.fetch_to(stored.storage_key, target)
        yield root


def check_against_record(revision: Revision, report: Report) -> None:
    """The stored files must be exactly those published: none missing, none added, same sizes."""
    recorded = {stored.path: stored.size for stored in revision.files.all()}
    for path, digest in report.files.items():
        if path not in recorded:
            report.fail("files", "UnexpectedFile", f"{path} is in storage but was not published", path)
        elif digest.size != recorded[path]:
            report.fail(
                "files", "SizeChanged", f"{path} has {digest.size} bytes, {recorded[path]} were published", path
            )
    for path in recorded.keys() - report.files.keys():
        report.fail("files", "FileMissing", f"{path} was published but is not in storage", path)


def record_report(revision: Revision, report: Report) -> Revision:
    with transaction.atomic():
        CheckResult.objects.filter(revision=revision).delete()
        CheckResult.objects.bulk_create(
            CheckResult(revision=revision, name=c.name, status=c.status, code=c.code, file=c.file, message=c.message)
            for c in report.checks
        )
        for stored in revision.files.all():
            digest = report.files.get(stored.path)
            if digest is not None and stored.sha256 != digest.sha256:
                stored.sha256 = digest.sha256
                stored.save(update_fields=["sha256"])
        if report.ok:
            revision.move(Revision.State.VERIFIED, verified_at=timezone.now(), failure_reason="")
        else:
            reasons = "; ".join(f"{c.file or c.name}: {c.message}" for c in report.failures[:5])
            more = len(report.failures) - 5
            revision.move(Revision.State.FAILED, failure_reason=reasons + (f"; and {more} more" if more > 0 else ""))
    log.info("revision %s: %s", revision, revision.state)
    return revision


def verify_revision(revision_id: int) -> Revision | None:
    revision = claim_for_verification(revision_id)
    if revision is None:
        return None
    try:
        with staged_checkpoint(revision) as root:
            try:
                report = check_directory(root)
            except UnreadableCheckpoint as error:
                report = Report()
                report.fail("files", "Unreadable", str(error))
    except StorageError:
        # Let the retry claim it again: the revision stays `verifying`, held by nobody.
        Revision.objects.filter(pk=revision.pk, state=Revision.State.VERIFYING).update(verification_started_at=None)
        raise
    check_against_record(revision, report)
    return record_report(revision, report)
