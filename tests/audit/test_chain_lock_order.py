"""A download's event refers to its revision; a verify worker locks that revision and then appends its own
audit events. With the foreign key checked at the download's COMMIT (PostgreSQL's deferred default), the
download took the chain's head first and the revision's key lock last, the worker the other way round:
PostgreSQL broke the deadlock by failing one of them (seen once in CI as a 500 on a download). The
appender now checks its writes' keys before it takes the head. Two real transactions on two connections,
in the order that deadlocked."""

import threading
import time

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client, RequestFactory

from access.models import ApiToken
from access.services import create_token
from audit.chain import breaks, record
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.downloads.events import Downloader, record_event
from distribution.downloads.spool import spooled_line, store
from distribution.models import DownloadEvent
from tests.support.flows import published_tiny_llama
from tests.support.lock_order import both_committed, started, worker_storing_a_verdict
from tests.support.personas import person, sign_in

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


@pytest.fixture
def deleting_alice():
    """Staff deleting alice in the admin, held half-way through: a third transaction holds her token's row, which
    the deletion must delete. Yields (start the deletion, let it go on, its outcomes)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deferred foreign keys are PostgreSQL's; SQLite writes one at a time")
    alice = person("alice")
    create_token(alice, "old", actor=alice)
    staff = sign_in(Client(), person("carol", staff=True))
    holding, release, failures, outcomes = threading.Event(), threading.Event(), [], []

    def hold_her_token() -> None:
        with transaction.atomic():
            ApiToken.objects.select_for_update().filter(user=alice).exists()
            holding.set()
            release.wait(10)

    def delete() -> threading.Thread:
        holder = started(hold_her_token, failures)
        assert holding.wait(10)
        deleting = started(
            lambda: outcomes.append(staff.post(f"/admin/access/user/{alice.pk}/delete/", {"post": "yes"}).status_code),
            failures,
        )
        time.sleep(0.5)  # the deletion waits for the token's row (before the fix, holding the chain's head)
        return holder, deleting

    def go_on(*threads: threading.Thread) -> None:
        time.sleep(0.5)  # alice's own transaction, started meanwhile, waits too
        release.set()
        for thread in threads:
            thread.join(30)

    yield alice, delete, go_on, failures, outcomes


def test_an_event_naming_an_account_being_deleted_lands_after_it_without_its_link(deleting_alice):
    """An event whose actor's account is deleted meanwhile is kept, naming her, its link to the account gone as
    for her earlier events; it was refused (the foreign key) and the action it records with it."""
    alice, delete, go_on, failures, outcomes = deleting_alice
    threads = delete()
    acting = started(lambda: record(Tag.LICENSE_ACCEPTED, actor=alice, subject=alice), failures)
    go_on(*threads, acting)
    assert failures == [] and outcomes == [302]
    accepted = AuditEvent.objects.get(tag=Tag.LICENSE_ACCEPTED)
    assert (accepted.actor_username, accepted.actor_id) == ("alice", None)
    assert AuditEvent.objects.filter(tag=Tag.ADMIN_USER_DELETED, subject_username="alice").count() == 1
    assert breaks() == []


def test_a_token_made_for_an_account_being_deleted_fails_on_its_key_not_in_a_deadlock(deleting_alice):
    """The deletion took the chain's head and then her row; her token's transaction took a key lock on her row
    (the new token refers to her) and then waited for the head: PostgreSQL failed one of the two. The deletion
    now locks her row first, so the token waits for it and fails as made for an account that is gone."""
    alice, delete, go_on, failures, outcomes = deleting_alice
    threads = delete()
    creating = started(lambda: create_token(alice, "new", actor=alice), failures)
    go_on(*threads, creating)
    assert outcomes == [302] and len(failures) == 1
    assert isinstance(failures[0], IntegrityError) and "foreign key" in str(failures[0]), failures
    assert not ApiToken.objects.exists() and not AuditEvent.objects.filter(data__name="new").exists()
    assert breaks() == []
