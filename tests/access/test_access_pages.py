"""The pages people use: the repo page form, my requests, the review queue, the account page."""

import re

import pytest
from django.test import Client

from access.models import AccessRequest, ApiToken, GatingPolicy, Grant, Reviewer, hash_token
from distribution.models import Repo
from tests.support.personas import person, sign_in, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo():
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(
        repo=repo,
        license_text="Use it kindly.",
        license_version="3",
        form_fields=[
            {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
            {"name": "country", "label": "Country", "type": "country", "required": True},
        ],
    )
    return repo


def test_the_repo_page_form_files_a_request_and_shows_it_pending(client, repo):
    sign_in(client, person("alice"))
    page = client.get("/acme/tiny").content.decode()
    assert "Affiliation" in page and "Use it kindly." in page and "version 3" in page
    response = client.post("/acme/tiny", {"affiliation": "Lab", "country": "NO", "accept_license": "on"}, follow=True)
    assert "was sent" in response.content.decode() and "awaits a reviewer" in response.content.decode()
    assert AccessRequest.objects.get().fields == {"affiliation": "Lab", "country": "NO"}


def test_the_form_keeps_answers_and_names_what_is_missing(client, repo):
    sign_in(client, person("alice"))
    page = client.post("/acme/tiny", {"affiliation": "Lab", "accept_license": "on"}).content.decode()
    assert "Country is required" in page and 'value="Lab"' in page
    assert not AccessRequest.objects.exists()


def test_every_form_needs_its_csrf_token(repo):
    strict = Client(enforce_csrf_checks=True)
    alice = person("alice")
    sign_in(strict, alice)
    assert strict.post("/acme/tiny", {"affiliation": "Lab", "country": "NO", "accept_license": "on"}).status_code == 403
    assert strict.post("/account/", {"action": "create-token", "name": "x"}).status_code == 403
    sign_in(strict, person("bob", reviews=[repo]))
    assert strict.post("/review/", {"decision": "accepted", "request": "1"}).status_code == 403
    assert not AccessRequest.objects.exists() and not ApiToken.objects.exists()


def test_the_review_queue_filters_and_decides_in_bulk(client, repo):
    other = Repo.objects.create(org="acme", name="other")
    requests = [
        AccessRequest.objects.create(
            user=person(name), repo=repo, license_version="3", fields={"affiliation": affiliation}
        )
        for name, affiliation in (("ann", "Oxford"), ("ben", "Acme Corp"), ("cat", "Oxford"))
    ]
    AccessRequest.objects.create(user=person("dan"), repo=other, license_version="1")
    sign_in(client, person("bob", reviews=[repo]))
    page = client.get("/review/").content.decode()
    assert all(name in page for name in ("ann", "ben", "cat")) and "dan" not in page
    assert "example.org" in page  # the email domain is shown
    filtered = client.get("/review/", {"q": "oxford"}).content.decode()
    assert "ann" in filtered and "cat" in filtered and "ben" not in filtered
    refused = client.post("/review/", {"decision": "rejected", "request": [requests[1].pk]}, follow=True)
    assert "give a reason" in refused.content.decode()
    # a request id that is not one (an edited form) is passed over, never a server error
    chosen = client.post("/review/", {"decision": "accepted", "request": ["x", requests[0].pk, requests[2].pk]})
    assert chosen.status_code == 302
    client.post("/review/", {"decision": "rejected", "request": [requests[1].pk], "reason": "not a research use"})
    states = dict(AccessRequest.objects.filter(repo=repo).values_list("user__username", "state"))
    assert states == {"ann": "accepted", "ben": "rejected", "cat": "accepted"}
    assert set(Grant.active().values_list("user__username", flat=True)) == {"ann", "cat"}
    dan_request = AccessRequest.objects.get(user__username="dan")
    client.post("/review/", {"decision": "accepted", "request": [dan_request.pk]})  # not theirs to decide
    dan_request.refresh_from_db()
    assert dan_request.state == "pending"


def test_my_requests_shows_states_and_reasons(client, repo):
    alice = person("alice")
    AccessRequest.objects.create(
        user=alice, repo=repo, license_version="3", state="rejected", rejection_reason="tell us more about the project"
    )
    sign_in(client, alice)
    page = client.get("/requests/").content.decode()
    assert "rejected" in page and "tell us more about the project" in page


def test_the_account_page_shows_a_new_token_once_and_revokes_it(client, repo):
    alice = person("alice")
    sign_in(client, alice)
    page = client.post("/account/", {"action": "create-token", "name": "laptop", "scopes": "read"}).content.decode()
    raw = re.search(r'<code id="new-token">(wg_[^<]+)</code>', page).group(1)
    token = ApiToken.objects.get(user=alice)
    assert token.digest == hash_token(raw) and token.name == "laptop"
    assert raw not in client.get("/account/").content.decode()  # shown once
    assert client.get("/api/whoami-v2", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    client.post("/account/", {"action": "revoke-token", "token": token.pk})
    assert client.get("/api/whoami-v2", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_reviewers_choose_how_they_are_notified(client, repo):
    bob = person("bob", reviews=[repo])
    sign_in(client, bob)
    client.post("/account/", {"action": "notify", "notify": "daily"})
    assert Reviewer.objects.get(user=bob).notify == "daily"


def test_a_grantee_finds_the_download_script_on_the_repo_page(client, tmp_path):
    from access.services import grant_access
    from tests.support.flows import published_tiny_llama

    revision, _ = published_tiny_llama(tmp_path, "acme/scripted", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    sign_in(client, alice)
    page = client.get("/acme/scripted").content.decode()
    assert "download.sh" in page and "24 hours" in page
    script = client.get("/api/v1/repos/acme/scripted/revisions/main/download.sh")
    assert script.status_code == 200 and script.content.startswith(b"#!/usr/bin/env bash")


def test_the_review_queue_pages_its_rows_and_keeps_its_filters(client, repo):
    for number in range(105):
        AccessRequest.objects.create(user=person(f"applicant{number:03}"), repo=repo, license_version="3")
    sign_in(client, person("bob", reviews=[repo]))
    first = client.get("/review/", {"state": "pending"}).content.decode()
    assert "applicant000" in first and "applicant099" in first and "applicant100" not in first
    assert "page 1 of 2 (105 rows)" in first and 'href="?state=pending&amp;page=2"' in first
    second = client.get("/review/", {"state": "pending", "page": "2"}).content.decode()
    assert "applicant100" in second and "applicant104" in second and "applicant099" not in second


def test_my_requests_come_newest_first_a_page_at_a_time(client):
    alice = person("alice")
    for name in ("one", "two", "three"):
        other = Repo.objects.create(org="acme", name=name)
        AccessRequest.objects.create(user=alice, repo=other, license_version="1")
    bearer = f"Bearer {token_for(alice)}"
    first = client.get("/api/v1/access-requests/", {"page_size": 2}, HTTP_AUTHORIZATION=bearer).json()
    assert [row["repo"] for row in first["results"]] == ["acme/three", "acme/two"]
    second = client.get(first["next"], HTTP_AUTHORIZATION=bearer).json()
    assert [row["repo"] for row in second["results"]] == ["acme/one"] and second["next"] is None
