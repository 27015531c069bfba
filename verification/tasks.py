"""Verification's tasks: each takes a revision id, runs one stage through the services, and queues
the next stage; retries and limits are on the decorator."""

import contextlib

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from distribution.models import Revision
from distribution.storage import StorageError
from verification import services

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
        revision = services.run_checks_stage(revision_id)
        if revision is not None and revision.verification_stage == Revision.Stage.SMOKE_QUEUED:
            smoke_revision.delay(revision.pk)


@shared_task(**RELIABLE)
def smoke_revision(revision_id: int) -> None:
    """The smoke pass (queue `gpu`): a forward pass on the best device the worker has."""
    with failing_when_out_of_time(revision_id):
        services.run_smoke_stage(revision_id)


@contextlib.contextmanager
def failing_when_out_of_time(revision_id: int):
    """A stage that runs past its soft limit fails the revision, instead of being retried forever."""
    try:
        yield
    except SoftTimeLimitExceeded:
        services.fail_verification(
            revision_id,
            f"verification took longer than {settings.VERIFY_TIME_LIMIT_SECONDS} s "
            "(VERIFY_TIME_LIMIT_SECONDS); raise the limit or verify on a faster worker",
        )


STAGE_TASKS = {Revision.Stage.CHECKS: verify_revision, Revision.Stage.SMOKE: smoke_revision}


def requeue_stalled() -> list[tuple[Revision, str]]:
    """Send again the stage of every revision whose verification stalled: a lost message or a dead worker."""
    stalled = services.stalled_stages()
    for revision, stage in stalled:
        STAGE_TASKS[stage].delay(revision.pk)
    return stalled


@shared_task(ignore_result=True)
def requeue_stuck_verifications() -> int:
    """Periodic: hand revisions whose worker died or whose message was lost to a live worker."""
    return len(requeue_stalled())
