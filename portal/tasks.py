"""The portal's periodic jobs that need several layers at once."""

from celery import shared_task

from portal.anchors import anchor_head


@shared_task(ignore_result=True)
def anchor_audit_chain() -> str | None:
    """Every AUDIT_ANCHOR_SECONDS: sign the audit chain's head and store the statement outside the database."""
    return anchor_head()
