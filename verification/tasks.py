"""Verification's tasks: each takes a revision id (and a file), runs one stage through the services,
and queues the next; retries and limits are on the decorator."""

import contextlib
import logging
import time

from celery import group, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup
from django.conf import settings

from distribution.models import Revision
from distribution.storage import StorageError
from verification import services
from verification.core.model_checks import expected_parameters
from verification.core.tiny_llama import TINY_LLAMA_CONFIG

log = logging.getLogger(__name__)
# The queues whose tasks build models from configs: the checks' judge (verify) and the smoke pass (gpu).
MODEL_QUEUES = {"verify", "gpu"}

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
    """Stage one begins (queue `verify`): one task per file still to check, for any verify worker."""
    with failing_when_out_of_time(revision_id):
        pending = services.start_checks(revision_id)
        if pending:
            group(check_file.s(revision_id, path) for path in pending).apply_async()
        elif pending is not None:  # every file was checked before (a stage handed over): judge now
            queue_smoke(services.finish_checks(revision_id))


@shared_task(bind=True, **RELIABLE)
def check_file(self, revision_id: int, path: str) -> None:
    """One file (queue `verify`); the worker that checks the last one judges the whole checkpoint."""
    with failing_when_out_of_time(revision_id):
        if services.check_stored_file(revision_id, path, worker=self.request.hostname or "") is not None:
            queue_smoke(services.finish_checks(revision_id))


@shared_task(**RELIABLE)
def smoke_revision(revision_id: int) -> None:
    """The smoke pass (queue `gpu`): a forward pass on the best device the worker has."""
    with failing_when_out_of_time(revision_id):
        services.run_smoke_stage(revision_id)


def queue_smoke(revision: Revision | None) -> None:
    if revision is not None and revision.verification_stage == Revision.Stage.SMOKE_QUEUED:
        smoke_revision.delay(revision.pk)


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


def requeue_stalled() -> list[services.Stalled]:
    """Send again every stage or file whose verification stalled: a lost message or a dead worker."""
    stalled = services.stalled_work()
    for work in stalled:
        if work.stage == "file":
            check_file.delay(work.revision.pk, work.path)
        elif work.stage == Revision.Stage.SMOKE:
            smoke_revision.delay(work.revision.pk)
        else:
            verify_revision.delay(work.revision.pk)
    return stalled


@shared_task(ignore_result=True)
def requeue_stuck_verifications() -> int:
    """Periodic: hand the stages and files of workers that died, or messages that were lost, to live workers."""
    return len(requeue_stalled())


@celeryd_after_setup.connect(weak=False)
def load_model_code(sender=None, instance=None, **kwargs) -> None:
    """A verify or GPU worker loads torch and transformers' model code as it starts, before its first
    task: otherwise the first checkpoint it judges waits for them (4 s here, 14 s on a GPU machine)."""
    if not set(instance.app.amqp.queues.consume_from or ()) & MODEL_QUEUES:
        return
    started = time.perf_counter()
    expected_parameters(TINY_LLAMA_CONFIG)
    log.info("model code loaded in %.1f s, before the first task", time.perf_counter() - started)
