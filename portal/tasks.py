"""The portal's periodic jobs that need several layers at once."""

import logging

from celery import shared_task
from django.core.cache import cache

from distribution.storage import StorageError
from mail.messages import alert_staff
from portal.anchors import anchor_head
from portal.restore import released_objects

log = logging.getLogger(__name__)
# How many problems the last check of released files found, for /metrics (the cache is shared).
RELEASED_STORAGE_PROBLEMS_KEY = "weightgate:released-storage-problems"


@shared_task(ignore_result=True)
def anchor_audit_chain() -> str | None:
    """Every AUDIT_ANCHOR_SECONDS: sign the audit chain's head and store the statement outside the database."""
    return anchor_head()


@shared_task(ignore_result=True)
def check_released_storage() -> str | None:
    """Daily: every file of every released revision still held in storage as verified (one HEAD or stat each,
    no byte read), and staff mailed what is not, before a recipient meets it. Storage out of reach fails the
    job (its last success goes stale on /metrics) and mails nobody."""
    findings = list(released_objects())
    if unreachable := [finding.text for finding in findings if finding.unreachable]:
        raise StorageError(f"{len(unreachable)} released revision(s) could not be checked: {unreachable[0]}")
    problems = [finding.text for finding in findings if not finding.ok]
    cache.set(RELEASED_STORAGE_PROBLEMS_KEY, len(problems), timeout=None)
    if not problems:
        return None
    log.error("%d problem(s) with released files in storage: %s", len(problems), problems[0])
    alert_staff("released_storage_changed", problems)
    return "\n".join(problems)
