"""The audit log is a hash chain: editing, deleting or moving a row directly in the database is
caught, and writers in several processes at once never fork it."""

import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from audit.chain import first_break, record
from audit.models import AuditEvent
from tests.support.personas import person
from tests.support.servers import REPO_ROOT


def verify() -> str:
    import io

    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


@pytest.fixture
def chain(db):
    alice = person("alice")
    for number in range(5):
        record("access:request:submitted", actor=alice, subject=alice, number=number)
    assert "intact (5 events)" in verify()
    return list(AuditEvent.objects.order_by("sequence"))


def broken() -> str:
    with pytest.raises(CommandError) as raised:
        verify()
    return str(raised.value)


def test_an_edited_event_is_named(chain):
    AuditEvent.objects.filter(sequence=3).update(data={"number": 99})
    assert "event 3 (access:request:submitted) was edited" in broken()


def test_a_deleted_event_is_named(chain):
    AuditEvent.objects.filter(sequence=2).delete()
    assert "event 2 is missing" in broken()


def test_deleting_the_newest_events_is_caught_too(chain):
    AuditEvent.objects.filter(sequence__gte=4).delete()
    assert "should end at event 5 but ends at 3" in broken()


def test_the_daily_check_mails_staff_only_when_the_chain_is_broken(chain, mailoutbox):
    from audit.tasks import check_audit_chain

    person("root", staff=True)
    assert check_audit_chain.apply().get() is None and mailoutbox == []
    AuditEvent.objects.filter(sequence=3).update(data={"number": 99})
    problem = check_audit_chain.apply().get()
    assert "event 3 (access:request:submitted) was edited" in problem
    assert [message.to for message in mailoutbox] == [["root@example.org"]]  # staff only, not alice
    assert problem in mailoutbox[0].body and "verify_audit_chain" in mailoutbox[0].body


def test_swapped_events_are_caught(chain):
    AuditEvent.objects.filter(sequence=2).update(sequence=-2)
    AuditEvent.objects.filter(sequence=3).update(sequence=2)
    AuditEvent.objects.filter(sequence=-2).update(sequence=3)
    assert "event 2 does not follow event 1" in broken()


def test_a_rewritten_hash_does_not_hide_an_edit(chain):
    event = chain[1]
    event.data = {"number": 42}
    AuditEvent.objects.filter(pk=event.pk).update(data=event.data, hash=event.compute_hash())
    assert "event 3 does not follow event 2" in broken()


def test_events_keep_only_a_keyed_hash_of_where_they_came_from_in_the_chain(db):
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT="curl/8", REMOTE_ADDR="203.0.113.9")
    event = record("access:token:created", request=request)
    assert event.origin_digest and "203.0.113.9" not in event.canonical().decode()
    AuditEvent.objects.filter(pk=event.pk).update(ip=None, user_agent="")  # retention erases them
    assert "intact" in verify()


WRITER = """
from audit.chain import first_break, record
for number in range(25):
    record("access:token:created", writer={writer}, number=number)
"""


@pytest.mark.django_db(transaction=True)
def test_writers_in_several_processes_never_fork_the_chain(worker_env):
    writers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", WRITER.format(writer=n)],
            cwd=REPO_ROOT,
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, 101))
    assert "intact (100 events)" in verify()


def test_values_the_database_would_change_are_kept_as_text_and_the_chain_verifies(db):
    from datetime import UTC, datetime

    # PostgreSQL's jsonb reads 1e16 back as an integer: hashed as written, it would never verify again.
    event = record("access:token:created", limit=1e16, ratio=0.1, when=datetime(2026, 1, 2, tzinfo=UTC), ok=True)
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.data == {"limit": "1e+16", "ratio": "0.1", "when": "2026-01-02T00:00:00+00:00", "ok": True}
    assert first_break() is None
