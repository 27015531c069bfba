"""Distribution's periodic jobs."""

from pathlib import Path

from celery import shared_task
from django.conf import settings

from distribution import xet
from distribution.downloads.spool import ship_orphans
from distribution.lfs import discard_unclaimed_objects
from distribution.publishing import discard_abandoned_drafts
from distribution.storage import StorageError
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


# A lost message (a broker restarted) is sent again by the daily job; a worker killed mid-way hands it back.
@shared_task(
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(StorageError,),
    retry_backoff=10,
    retry_kwargs={"max_retries": 8},
)
def assemble_xet_upload(object_id: int) -> None:
    """A file a shard named, rebuilt from its Xet upload's xorbs and accepted or refused (xet.assemble); tried
    again while storage is away."""
    xet.assemble(object_id)


@shared_task(ignore_result=True)
def requeue_stuck_assemblies() -> int:
    """Every few minutes: send again the rebuilds of Xet uploads whose message was lost (xet.stuck_assemblies)."""
    stuck = xet.stuck_assemblies()
    xet.queue_assembly(stuck)
    return len(stuck)
