"""Distribution's periodic jobs."""

from pathlib import Path

from celery import shared_task
from django.conf import settings

from distribution.downloads.spool import ship_orphans
from distribution.lfs import discard_unclaimed_objects
from distribution.publishing import discard_abandoned_drafts
from distribution.xet import discard_old_xorbs


@shared_task(ignore_result=True)
def store_spooled_downloads() -> int:
    """Every minute: store the spooled download events of web processes on this host that are gone."""
    return ship_orphans(Path(settings.DOWNLOAD_SPOOL_DIR))


@shared_task(ignore_result=True)
def discard_abandoned_publishes() -> int:
    """Daily: delete drafts nobody finished in PUBLISH_DRAFT_DAYS, their copies and unfinished uploads, and
    the Hub client's uploads as old that no revision's file refers to, and its Xet uploads' xorbs older than
    XET_XORB_DAYS."""
    return len(discard_abandoned_drafts()) + discard_unclaimed_objects() + discard_old_xorbs()
