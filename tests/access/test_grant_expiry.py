"""Grants that expire: an expired grant stops downloads, and access granted again is a new live grant."""

from datetime import timedelta

import pytest
from django.utils import timezone

from access.models import Grant
from access.services import grant_access
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


def test_an_expired_grant_stops_downloads(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/expiring", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None, expires_at=timezone.now() + timedelta(hours=1))
    token = token_for(alice)
    url = "/acme/expiring/resolve/main/config.json"
    assert client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    Grant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token}")["X-Error-Code"] == "GatedRepo"


def test_access_granted_again_after_expiry_is_a_new_live_grant(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/expiring", verify_here=True)
    alice = person("alice")
    first = grant_access(alice, revision.repo, granted_by=None, expires_at=timezone.now() + timedelta(hours=1))
    Grant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    second = grant_access(alice, revision.repo, granted_by=person("bob"), expires_at=timezone.now() + timedelta(days=1))
    assert second.pk != first.pk and second.expires_at > timezone.now()
    first.refresh_from_db()
    assert first.revoked_at is not None  # closed, so the one-live-grant rule leaves room for the new one
    url = "/acme/expiring/resolve/main/config.json"
    assert client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}").status_code == 200
