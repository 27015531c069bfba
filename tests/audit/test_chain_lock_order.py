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

from audit.chain import breaks, record
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.downloads.events import Downloader, record_event
from distribution.downloads.spool import spooled_line, store
from distribution.models import DownloadEvent, Revision
from tests.support.flows import published_tiny_llama
from tests.support.personas import person

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_download_event_and_a_worker_holding_its_revision_both_commit(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deferred foreign keys are PostgreSQL's; SQLite writes one at a time")
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    stored = revision.files.get(path="config.json")
    who = Downloader(user=person("alice"), grant=None, token=None)
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5")
    appended, release, failures = threading.Event(), threading.Event(), []

    def download() -> None:
        try:
            with transaction.atomic():  # the download's event and its audit event, held open before the commit
                record_event(request, stored, who, channel=DownloadEvent.Channel.LOCAL, status=200, expected=2)
                appended.set()
                release.wait(10)
        except Exception as error:  # reported by the test below
            failures.append(error)
        finally:
            connection.close()

    def worker() -> None:
        try:
            with transaction.atomic():  # as still_verifying: the revision locked, then an audit event
                Revision.objects.select_for_update().filter(pk=revision.pk).exists()
                record(Tag.TOKEN_CREATED, number=1)
        except Exception as error:  # reported by the test below
            failures.append(error)
        finally:
            connection.close()

    downloading = threading.Thread(target=download)
    downloading.start()
    assert appended.wait(10)
    working = threading.Thread(target=worker)
    working.start()
    time.sleep(0.5)  # the worker holds the revision and waits for the head (before the fix), or waits for the row
    release.set()
    downloading.join(30)
    working.join(30)
    assert failures == []
    assert DownloadEvent.objects.count() == 1
    assert AuditEvent.objects.filter(tag=Tag.TOKEN_CREATED).count() == 1 and breaks() == []


def test_spooled_download_events_and_a_worker_holding_their_revision_both_commit(tmp_path):
    """The spool's shipper stores events that refer to a revision a verify worker has locked. It took the head
    first (its lock on storing, one shipper at a time) and the revision's key lock when it appended: the
    worker, holding the revision and waiting for the head, deadlocked with it. The shipper now takes the key
    locks of what it refers to before the head."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deferred foreign keys are PostgreSQL's; SQLite writes one at a time")
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    stored = revision.files.get(path="config.json")
    who = Downloader(user=person("alice"), grant=None, token=None)
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5")
    lines = [spooled_line(request, stored, who, channel=DownloadEvent.Channel.S3_REDIRECT, status=302, expected=2)]
    locked, failures, shipped = threading.Event(), [], []

    def worker() -> None:
        try:
            with transaction.atomic():  # as still_verifying: the revision locked, then an audit event
                Revision.objects.select_for_update().filter(pk=revision.pk).exists()
                locked.set()
                time.sleep(
                    0.5
                )  # the shipper starts meanwhile and waits for the revision (before the fix, holding the head)
                record(Tag.TOKEN_CREATED, number=1)
        except Exception as error:  # reported by the test below
            failures.append(error)
        finally:
            connection.close()

    def shipper() -> None:
        try:
            shipped.append(store(lines))
        except Exception as error:  # reported by the test below
            failures.append(error)
        finally:
            connection.close()

    working = threading.Thread(target=worker)
    working.start()
    assert locked.wait(10)
    shipping = threading.Thread(target=shipper)
    shipping.start()
    working.join(30)
    shipping.join(30)
    assert failures == []
    assert shipped == [1] and DownloadEvent.objects.get().revision_id == revision.pk
    assert AuditEvent.objects.filter(tag=Tag.TOKEN_CREATED).count() == 1 and breaks() == []
