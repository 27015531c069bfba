"""A connection lost during a COMMIT leaves the transaction landed or not, and the writer cannot tell
which from the error. The audit chain's append and a download's event ask a fresh connection: written
once either way, never twice, never a 500. (The loss is made by closing the driver's connection around
the real commit: PostgreSQL's own terminations are in tests/system/test_service_faults.py, where they
land at a COMMIT only now and then.)"""

import pytest
from django.db import connection
from django.db.utils import OperationalError

from audit.chain import breaks, record
from audit.models import AuditEvent
from audit.tags import Tag

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("a lost connection is told by psycopg's `closed`; SQLite has no connection to lose")


def lose_connection_at_first_commit(monkeypatch, *, after_commit: bool) -> list[str]:
    """The next COMMIT loses the connection: after the server committed (the answer lost), or before."""
    real_commit, lost = connection._commit, []

    def commit():
        if lost:
            return real_commit()
        lost.append("lost")
        if after_commit:
            real_commit()
        connection.connection.close()  # the server rolls back what was not committed
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(connection, "_commit", commit)
    return lost


@pytest.mark.parametrize("after_commit", [True, False], ids=["landed", "not-landed"])
def test_an_append_whose_commit_was_cut_is_on_the_chain_once(postgresql, monkeypatch, after_commit):
    record(Tag.TOKEN_CREATED, number=1)
    lost = lose_connection_at_first_commit(monkeypatch, after_commit=after_commit)
    record(Tag.TOKEN_CREATED, number=2)
    assert lost == ["lost"]
    assert [event.data["number"] for event in AuditEvent.objects.order_by("sequence")] == [1, 2]
    assert breaks() == []


@pytest.mark.parametrize("after_commit", [True, False], ids=["landed", "not-landed"])
def test_a_download_event_whose_commit_was_cut_is_stored_once(postgresql, monkeypatch, tmp_path, after_commit):
    from django.test import RequestFactory

    from distribution.downloads.events import Downloader, record_event
    from distribution.models import DownloadEvent
    from tests.support.flows import published_tiny_llama
    from tests.support.personas import person

    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    stored = revision.files.get(path="config.json")
    alice = person("alice")
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.5")
    lose_connection_at_first_commit(monkeypatch, after_commit=after_commit)
    who = Downloader(user=alice, grant=None, token=None)
    event = record_event(request, stored, who, channel=DownloadEvent.Channel.LOCAL, status=200, expected=stored.size)
    assert list(DownloadEvent.objects.values_list("pk", flat=True)) == [event.pk]
    assert AuditEvent.objects.filter(tag=Tag.DOWNLOAD_SERVED).count() == 1 and breaks() == []
