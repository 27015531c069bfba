"""A new license version must be accepted before the next download."""

import json

import pytest

from access.models import GatingPolicy
from access.services import grant_access
from audit.models import AuditEvent
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


def test_a_new_license_version_must_be_accepted_before_the_next_download(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/licensed", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    url = "/acme/licensed/resolve/main/config.json"
    assert client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    GatingPolicy.objects.filter(repo=revision.repo).update(license_version="2")
    refused = client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 403 and refused["X-Error-Code"] == "GatedRepo"
    assert "changed to version 2" in refused["X-Error-Message"]

    def accept(version: str):
        return client.post(
            "/api/v1/repos/acme/licensed/license-acceptance/",
            content_type="application/json",
            data=json.dumps({"license_version": version}),
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    assert accept("1").status_code == 409  # not the current version
    accepted = accept("2")
    assert accepted.status_code == 200
    assert client.head(url, follow=True, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert AuditEvent.objects.filter(tag="access:license:accepted", subject_username="alice").count() == 1
