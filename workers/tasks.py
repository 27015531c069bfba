"""Thin tasks: take ids, call the services, leave retries and limits to the decorator."""

import contextlib
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from access import services as access_services
from distribution.event_spool import ship_orphans
from distribution.storage import StorageError
from portal import audit, retention
from verification import services as verification_services

# Every verification task: redelivered if its worker dies, limited in time, retried only on storage trouble.
RELIABLE = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.VERIFY_TIME_LIMIT_SECONDS,
    "time_limit": settings.VERIFY_TIME_LIMIT_SECONDS + 60,
    "autoretry_for": (StorageError,),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "max_retries": 5,
}


@shared_task(**RELIABLE)
def verify_revision(revision_id: int) -> None:
    """Every check but the smoke pass (queue `verify`); queues the smoke pass when they pass."""
    with failing_when_out_of_time(revision_id):
        verification_services.run_checks_stage(revision_id)


@shared_task(**RELIABLE)
def smoke_revision(revision_id: int) -> None:
    """The smoke pass (queue `gpu`): a forward pass on the best device the worker has."""
    with failing_when_out_of_time(revision_id):
        verification_services.run_smoke_stage(revision_id)


@contextlib.contextmanager
def failing_when_out_of_time(revision_id: int):
    """A stage that runs past its soft limit fails the revision, instead of being retried forever."""
    try:
        yield
    except SoftTimeLimitExceeded:
        verification_services.fail_verification(
            revision_id,
            f"verification took longer than {settings.VERIFY_TIME_LIMIT_SECONDS} s "
            "(VERIFY_TIME_LIMIT_SECONDS); raise the limit or verify on a faster worker",
        )


@shared_task(ignore_result=True)
def requeue_stuck_verifications() -> int:
    """Periodic: hand revisions whose worker died or whose message was lost to a live worker."""
    return len(verification_services.requeue_stuck())


@shared_task(ignore_result=True)
def send_review_digests() -> int:
    """Daily: the digest email for reviewers who asked for one."""
    return access_services.send_review_digests()


@shared_task(ignore_result=True)
def record_expired_grants() -> int:
    """Hourly: an audit event for each grant whose expiry passed since the last run."""
    return access_services.record_expired_grants()


@shared_task(ignore_result=True)
def erase_old_origins() -> dict[str, int]:
    """Daily: erase the address and user agent of events older than AUDIT_ORIGIN_RETENTION_DAYS."""
    return retention.erase_old_origins()


@shared_task(ignore_result=True)
def check_audit_chain() -> str | None:
    """Daily: verify the whole hash chain and mail staff if an event was altered."""
    return audit.alert_if_broken()


@shared_task(ignore_result=True)
def store_spooled_downloads() -> int:
    """Every minute: store the spooled download events of web processes on this host that are gone."""
    return ship_orphans(Path(settings.DOWNLOAD_SPOOL_DIR))
