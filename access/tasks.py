"""Access's periodic jobs."""

from celery import shared_task

from access import services


@shared_task(ignore_result=True)
def send_review_digests() -> int:
    """Daily: the digest email for reviewers who asked for one."""
    return services.send_review_digests()


@shared_task(ignore_result=True)
def record_expired_grants() -> int:
    """Hourly: an audit event for each grant whose expiry passed since the last run."""
    return services.record_expired_grants()
