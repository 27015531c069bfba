"""A download's event refers to its revision; a verify worker locks that revision and then appends its own
audit events. With the foreign key checked at the download's COMMIT (PostgreSQL's deferred default), the
download took the chain's head first and the revision's key lock last, the worker the other way round:
PostgreSQL broke the deadlock by failing one of them (seen once in CI as a 500 on a download). The
appender now checks its writes' keys before it takes the head. Two real transactions on two connections,
in the order that deadlocked."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.test import RequestFactory

from distribution.downloads.events import Downloader, record_event
from distribution.downloads.spool import spooled_line, store
from distribution.models import DownloadEvent
from tests.support.flows import published_tiny_llama
from tests.support.lock_order import both_committed, started, worker_storing_a_verdict
from tests.support.personas import person

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def download(tmp_path):
    """A released file on PostgreSQL and what a download of it by alice is recorded with."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deferred foreign keys are PostgreSQL's; SQLite writes one at a time")
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    stored = revision.files.get(path="config.json")
    who = Downloader(user=person("alice"), grant=None, token=None)
    return stored, who, RequestFactory().get("/", REMOTE_ADDR="203.0.113.5")


def test_a_download_event_and_a_worker_holding_its_revision_both_commit(download):
    stored, who, request = download
    appended, release, failures = threading.Event(), threading.Event(), []

    def recorded() -> None:
        with transaction.atomic():  # the download's event and its audit event, held open before the commit
            record_event(request, stored, who, channel=DownloadEvent.Channel.LOCAL, status=200, expected=2)
            appended.set()
            release.wait(10)

    downloading = started(recorded, failures)
    assert appended.wait(10)
    working = started(lambda: worker_storing_a_verdict(stored.revision), failures)
    time.sleep(0.5)  # the worker holds the revision and waits for the head (before the fix), or waits for the row
    release.set()
    both_committed(failures, downloading, working)
    assert DownloadEvent.objects.count() == 1


def test_spooled_download_events_and_a_worker_holding_their_revision_both_commit(download):
    """The spool's shipper stores events that refer to a revision a verify worker has locked. It took the head
    first (its lock on storing, one shipper at a time) and the revision's key lock when it appended: the
    worker, holding the revision and waiting for the head, deadlocked with it. The shipper now takes the key
    locks of what it refers to before the head."""
    stored, who, request = download
    lines = [spooled_line(request, stored, who, channel=DownloadEvent.Channel.S3_REDIRECT, status=302, expected=2)]
    locked, failures, shipped = threading.Event(), [], []
    # The worker waits half a second once it holds the revision: the shipper starts meanwhile and waits
    # for the revision (before the fix, holding the head).
    working = started(lambda: worker_storing_a_verdict(stored.revision, locked, pause=0.5), failures)
    assert locked.wait(10)
    shipping = started(lambda: shipped.append(store(lines)), failures)
    both_committed(failures, working, shipping)
    assert shipped == [1] and DownloadEvent.objects.get().revision_id == stored.revision_id
