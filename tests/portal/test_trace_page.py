"""The staff page that traces a leak: staff with their second factor upload a leaked shard and see who
it was issued to; anyone else is refused; unreadable uploads are a clear 400. Audited like the command."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from access.services import grant_access
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import TracedRevision
from tests.support.downloads import body
from tests.support.flows import published_traceable
from tests.support.personas import person, sign_in, token_for

pytestmark = pytest.mark.django_db
REPO = "acme/traced"


@pytest.fixture
def leaked(settings, tmp_path, client):
    """carol's own copy of a shard, as she downloaded it."""
    settings.TRACE_CARRIER_PERMILLE = 1000
    revision, _ = published_traceable(tmp_path, REPO)
    carol = person("carol")
    grant_access(carol, revision.repo, granted_by=None)
    shard = next(iter(TracedRevision.objects.get(revision=revision).files))
    response = client.get(f"/{REPO}/resolve/main/{shard}", HTTP_AUTHORIZATION=f"Bearer {token_for(carol)}", follow=True)
    assert response.status_code == 200
    client.logout()
    return shard, body(response)


def test_staff_upload_a_leaked_shard_and_see_whose_copy_it_is(client, leaked):
    shard, data = leaked
    sign_in(client, person("root", staff=True))
    page = client.post("/staff/trace-leak/", {"leak": SimpleUploadedFile(shard, data), "repo": REPO})
    assert page.status_code == 200
    verdict = page.content.decode()
    assert "<strong>carol</strong>" in verdict and f"byte-exact copy of {shard}" in verdict
    traced = AuditEvent.objects.get(tag=Tag.LEAK_TRACED)
    assert traced.actor_username == "root" and traced.data["named"] == ["carol"]


def test_unreadable_uploads_are_a_clear_refusal(client, leaked):
    sign_in(client, person("root", staff=True))
    page = client.post("/staff/trace-leak/", {"leak": SimpleUploadedFile("x.safetensors", b"\x00garbage" * 50)})
    assert page.status_code == 400 and "cannot trace these files" in page.content.decode()
    assert client.post("/staff/trace-leak/", {}).status_code == 400


def test_only_staff_past_their_second_factor_may_trace(client, leaked):
    shard, data = leaked
    for who in (person("alice"), person("bob", reviews=[TracedRevision.objects.get().revision.repo])):
        sign_in(client, who)
        assert client.post("/staff/trace-leak/", {"leak": SimpleUploadedFile(shard, data)}).status_code == 403
    sign_in(client, person("root", staff=True), second_factor=False)
    assert client.get("/staff/trace-leak/").status_code == 302  # to the second factor first
    assert not AuditEvent.objects.filter(tag=Tag.LEAK_TRACED).exists()
