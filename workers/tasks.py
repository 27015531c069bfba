"""Thin tasks: take ids, call the services, leave retries and limits to the decorator."""

from celery import shared_task
from django.conf import settings

from distribution.storage import StorageError


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.VERIFY_TIME_LIMIT_SECONDS,
    time_limit=settings.VERIFY_TIME_LIMIT_SECONDS + 60,
    autoretry_for=(StorageError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
)
def verify_revision(revision_id: int) -> None:
    from verification.services import verify_revision as run_verification

    run_verification(revision_id)
