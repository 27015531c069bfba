"""Retention: a daily job erases where old audit and download events came from; the chain stays whole."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from audit import retention
from audit import tasks as audit_tasks
from audit.chain import first_break, record
from audit.models import AuditEvent
from distribution.models import DownloadEvent
from tests.support.audit import AGENT
from tests.support.commands import manage
from tests.support.flows import SHARD

pytestmark = pytest.mark.django_db


def download_event(origin: dict) -> DownloadEvent:
    return DownloadEvent.objects.create(
        username="alice", repo_id="acme/tiny", commit="0" * 40, path=SHARD, channel="local", status=200, **origin
    )


def test_retention_erases_where_old_events_came_from_and_the_chain_stays_whole():
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT=AGENT, REMOTE_ADDR="203.0.113.9")
    origin = {"ip": "203.0.113.9", "user_agent": AGENT}
    old_audit = [record("access:token:created", request=request, number=n) for n in range(3)]
    old_download = download_event(origin)
    boundary = timezone.now()
    new_audit = record("access:token:created", request=request, number=3)
    new_download = download_event(origin)
    assert new_audit.created_at > boundary and new_download.created_at > boundary
    # The retention period after the boundary: the first events are past it, the last ones are not.
    erased = retention.erase_old_origins(now=boundary + timedelta(days=settings.AUDIT_ORIGIN_RETENTION_DAYS))
    assert erased == {"portal.AuditEvent": 3, "distribution.DownloadEvent": 1}

    for event in AuditEvent.objects.filter(pk__in=[e.pk for e in old_audit]):
        assert (event.ip, event.user_agent) == (None, "") and event.origin_digest
    old_download.refresh_from_db()
    assert (old_download.ip, old_download.user_agent) == (None, "")
    new_audit.refresh_from_db()
    new_download.refresh_from_db()
    assert (new_audit.ip, new_audit.user_agent) == (new_download.ip, new_download.user_agent) == tuple(origin.values())
    assert first_break() is None
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "intact (4 events)" in out.getvalue()


def test_a_retention_under_a_day_stops_start_up(tmp_path):
    result = manage("check", env={"AUDIT_ORIGIN_RETENTION_DAYS": "0"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "AUDIT_ORIGIN_RETENTION_DAYS=0 is below the minimum of 1" in result.stderr


def test_retention_run_by_the_job_keeps_recent_events_and_erases_nothing_twice():
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT=AGENT, REMOTE_ADDR="203.0.113.9")
    recent = record("access:token:created", request=request)
    old = download_event({"ip": "203.0.113.9", "user_agent": AGENT})
    # Download events are not chained: dating one back is how a row from months ago looks.
    DownloadEvent.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=settings.AUDIT_ORIGIN_RETENTION_DAYS + 1)
    )
    assert audit_tasks.erase_old_origins() == {"portal.AuditEvent": 0, "distribution.DownloadEvent": 1}
    assert audit_tasks.erase_old_origins() == {"portal.AuditEvent": 0, "distribution.DownloadEvent": 0}
    recent.refresh_from_db()
    assert recent.ip == "203.0.113.9" and recent.user_agent == AGENT
    assert first_break() is None
