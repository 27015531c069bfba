"""Asking for access without a browser, and deciding over the Hub-compatible API."""

import json

import pytest

from access.models import AccessRequest, GatingPolicy, Grant
from distribution.models import Repo
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo():
    return Repo.objects.create(org="acme", name="tiny")


def ask(client, token, body):
    return client.post(
        "/api/v1/access-requests/",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}" if token else "",
    )


def handle(client, token, body):
    return client.post(
        "/api/models/acme/tiny/user-access-request/handle",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_a_verified_applicant_files_a_pending_request(client, repo):
    GatingPolicy.objects.create(repo=repo, form_fields=[{"name": "org", "type": "text", "required": True}])
    body = {"repo": "acme/tiny", "fields": {"org": "Lab", "unknown": 1}, "accept_license": True}
    response = ask(client, token_for(person("alice")), body)
    assert response.status_code == 201
    assert response.json()["state"] == "pending"
    stored = AccessRequest.objects.get()
    assert stored.fields == {"org": "Lab"} and stored.license_version == "1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"repo": "acme/tiny", "accept_license": False}, 400, "accept the license"),
        ({"repo": "acme/nothing", "accept_license": True}, 404, "not found"),
        ({"repo": "not-a-repo-id", "accept_license": True}, 400, "ORG/NAME"),
        ({"accept_license": True}, 400, "required"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(client, repo, body, status, message):
    response = ask(client, token_for(person("alice")), body)
    assert response.status_code == status
    assert message in json.dumps(response.json())
    assert not AccessRequest.objects.exists()


def test_an_unverified_email_must_be_verified_first(client, repo):
    response = ask(client, token_for(person("dave", verified=False)), {"repo": "acme/tiny", "accept_license": True})
    assert response.status_code == 403
    assert "verify your email" in response.json()["detail"]
    assert not AccessRequest.objects.exists()


def test_anonymous_callers_and_bad_tokens_are_refused(client, repo):
    assert ask(client, None, {"repo": "acme/tiny", "accept_license": True}).status_code in (401, 403)
    assert ask(client, "wg_forged", {"repo": "acme/tiny", "accept_license": True}).status_code == 401
    assert not AccessRequest.objects.exists()


def test_a_second_pending_request_is_refused(client, repo):
    token = token_for(person("alice"))
    assert ask(client, token, {"repo": "acme/tiny", "accept_license": True}).status_code == 201
    response = ask(client, token, {"repo": "acme/tiny", "accept_license": True})
    assert response.status_code == 409 and "already have a pending request" in response.json()["detail"]
    assert AccessRequest.objects.count() == 1


def test_a_private_repo_is_not_found_for_strangers(client):
    Repo.objects.create(org="acme", name="secret", private=True)
    response = ask(client, token_for(person("alice")), {"repo": "acme/secret", "accept_license": True})
    assert response.status_code == 404


def test_automatic_approval_grants_at_once(client, repo):
    GatingPolicy.objects.create(repo=repo, mode=GatingPolicy.Mode.AUTOMATIC)
    response = ask(client, token_for(person("alice")), {"repo": "acme/tiny", "accept_license": True})
    assert response.json()["state"] == "accepted"
    assert Grant.active().filter(user__username="alice", repo=repo).exists()


def test_a_rejection_reason_reaches_the_applicant_and_revokes_an_earlier_grant(client, repo):
    alice_token = token_for(person("alice"))
    bob_token = token_for(person("bob", reviews=[repo]))
    ask(client, alice_token, {"repo": "acme/tiny", "accept_license": True})
    assert handle(client, bob_token, {"user": "alice", "status": "accepted"}).status_code == 200
    assert Grant.active().filter(user__username="alice").exists()
    response = handle(client, bob_token, {"user": "alice", "status": "rejected", "rejectionReason": "not a lab"})
    assert response.status_code == 200
    assert not Grant.active().filter(user__username="alice").exists()
    mine = client.get("/api/v1/access-requests/", HTTP_AUTHORIZATION=f"Bearer {alice_token}").json()["results"]
    assert (mine[0]["state"], mine[0]["rejection_reason"]) == ("rejected", "not a lab")


def test_handle_refuses_strangers_bad_bodies_and_unknown_people(client, repo):
    ask(client, token_for(person("alice")), {"repo": "acme/tiny", "accept_license": True})
    bob_token = token_for(person("bob", reviews=[repo]))
    assert handle(client, token_for(person("erin")), {"user": "alice", "status": "accepted"}).status_code == 403
    assert handle(client, bob_token, {"user": "alice", "status": "maybe"}).status_code == 400
    assert handle(client, bob_token, {"user": "nobody", "status": "accepted"}).status_code == 404
    bad = client.post(
        "/api/models/acme/tiny/user-access-request/handle",
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {bob_token}",
    )
    assert bad.status_code == 400
    assert AccessRequest.objects.get().state == "pending"
    assert not Grant.objects.exists()


@pytest.mark.parametrize("field", [{"rejectionReason": 1e16}, {"rejectionReason": ["no"]}, {"user": 7}])
def test_a_field_that_is_not_a_string_is_refused_with_400_and_changes_nothing(client, repo, field):
    reviewer = person("rita")
    repo.reviewers.create(user=reviewer)
    waiting = AccessRequest.objects.create(user=person("wendy"), repo=repo, license_version="1")
    response = handle(client, token_for(reviewer), {"user": "wendy", "status": "rejected", **field})
    assert response.status_code == 400 and "must be a string" in response.json()["error"]
    waiting.refresh_from_db()
    assert waiting.state == AccessRequest.State.PENDING
