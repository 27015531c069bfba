"""The audit trail's periodic jobs."""

from celery import shared_task

from audit import chain, retention


@shared_task(ignore_result=True)
def erase_old_origins() -> dict[str, int]:
    """Daily: erase the address and user agent of events older than AUDIT_ORIGIN_RETENTION_DAYS."""
    return retention.erase_old_origins()


@shared_task(ignore_result=True)
def check_audit_chain() -> str | None:
    """Daily: verify the whole hash chain and mail staff if an event was altered."""
    return chain.alert_if_broken()
