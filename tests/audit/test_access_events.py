"""Audit events of access requests and grants: submissions, re-applications, and grants the expiry job ends."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from access import tasks
from access.models import AccessRequest, Grant
from access.services import decide, grant_access, record_expired_grants
from tests.support.audit import events, only_event
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


def ask(token: str):
    return Client().post(
        "/api/v1/access-requests/",
        data=json.dumps({"repo": "acme/tiny", "accept_license": True}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_asking_again_after_a_rejection_is_a_reapplication_not_a_new_submission(repo, chain_checked):
    alice = person("alice")
    token = token_for(alice)
    assert ask(token).status_code == 201
    first = AccessRequest.objects.get()
    decide(first, status=AccessRequest.State.REJECTED, reviewer=person("bob", reviews=[repo]), reason="not yet")
    assert ask(token).status_code == 201
    assert len(events("access:request:submitted")) == 1
    reapplied = only_event("access:request:reapplied")
    assert (reapplied.actor_username, reapplied.subject_username, reapplied.repo_id) == ("alice", "alice", "acme/tiny")
    assert reapplied.data == {"license_version": "1", "previous_request": first.pk, "previous_state": "rejected"}
    assert reapplied.ip == "127.0.0.1"


def test_a_first_request_is_a_submission_only(repo):
    assert ask(token_for(person("alice"))).status_code == 201
    assert len(events("access:request:submitted")) == 1
    assert not events("access:request:reapplied")


def test_the_expiry_job_records_each_expired_grant_once(repo, chain_checked):
    now = timezone.now()
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    expiring = grant_access(alice, repo, granted_by=None, expires_at=now + timedelta(hours=1))
    grant_access(bob, repo, granted_by=None, expires_at=now + timedelta(days=30))
    revoked_first = grant_access(carol, repo, granted_by=None, expires_at=now + timedelta(hours=1))
    Grant.objects.filter(pk=expiring.pk).update(expires_at=now - timedelta(minutes=5))  # its hour went by
    Grant.objects.filter(pk=revoked_first.pk).update(
        revoked_at=now - timedelta(minutes=10), expires_at=now - timedelta(minutes=5)
    )

    assert tasks.record_expired_grants() == 1
    assert tasks.record_expired_grants() == 0
    expired = only_event("access:grant:expired")
    assert (expired.actor_username, expired.subject_username, expired.repo_id) == ("", "alice", "acme/tiny")
    assert expired.data == {"grant": expiring.pk, "expires_at": (now - timedelta(minutes=5)).isoformat()}

    # Extended by staff after it expired, then expired again: a second expiry, recorded once too.
    Grant.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    assert tasks.record_expired_grants() == 0
    two_hours_later = timezone.now() + timedelta(hours=2)
    assert record_expired_grants(now=two_hours_later) == 1
    assert record_expired_grants(now=two_hours_later) == 0
    assert len(events("access:grant:expired")) == 2
