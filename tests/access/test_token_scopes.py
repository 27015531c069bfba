"""A token does what its scopes allow and never more than its owner may: each rule tried as the attack
it stops, through the Hugging Face client where the client makes the call."""

from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from access import gate
from access.gate import AccessDenied
from access.models import AccessRequest, ApiToken, Grant, Scope
from access.services import assign_publisher, grant_access
from distribution.models import Repo, Revision, RevisionFile
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
COMMIT = "c" * 40


@pytest.fixture
def gated():
    """acme/tiny, gated, with a released revision of one file (rows only: enough for HEAD and the API)."""
    repo = Repo.objects.create(org="acme", name="tiny")
    revision = Revision.objects.create(
        repo=repo, commit=COMMIT, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    RevisionFile.objects.create(revision=revision, path="config.json", size=2, sha256="ab" * 32)
    return repo


def head(token: str, repo_id: str = "acme/tiny"):
    return Client().head(f"/{repo_id}/resolve/{COMMIT}/config.json", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_reviewers_read_token_cannot_grant_accept_or_list_requests(live_server, gated):
    bob = person("bob", reviews=[gated])
    mallory = person("mallory")
    AccessRequest.objects.create(user=mallory, repo=gated, license_version="1")
    stolen = HfApi(endpoint=live_server.url, token=token_for(bob, "cluster", scopes=[Scope.READ]))
    attempts = (
        lambda: stolen.grant_access("acme/tiny", "mallory"),
        lambda: stolen.accept_access_request("acme/tiny", "mallory"),
        lambda: list(stolen.list_pending_access_requests("acme/tiny")),
    )
    for attempt in attempts:
        with pytest.raises(HfHubHTTPError) as raised:
            attempt()
        assert raised.value.response.status_code == 403
        assert "created without the review scope" in raised.value.response.headers["X-Error-Message"]
    assert not Grant.objects.exists() and AccessRequest.objects.get().state == AccessRequest.State.PENDING

    HfApi(endpoint=live_server.url, token=token_for(bob, scopes=[Scope.REVIEW])).grant_access("acme/tiny", "mallory")
    assert Grant.objects.filter(user=mallory, repo=gated).exists()


def test_a_staff_read_token_downloads_no_unreleased_or_failed_revision(live_server, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/draft", release=False, verify_here=True)
    carol = person("carol", staff=True)
    grant_access(carol, revision.repo, granted_by=None)  # so only the revision's state stands in the way
    read_only = token_for(carol, "shared cluster", scopes=[Scope.READ])
    for state in (Revision.State.VERIFIED, Revision.State.FAILED):
        Revision.objects.filter(pk=revision.pk).update(state=state)
        with pytest.raises(RevisionNotFoundError):
            hf_hub_download(
                "acme/draft",
                "config.json",
                revision=revision.commit,
                endpoint=live_server.url,
                token=read_only,
                cache_dir=tmp_path / state,
            )
    # Staff powers travel only with the admin scope, which widens what read reaches (and only read).
    with pytest.raises(RevisionNotFoundError):
        HfApi(endpoint=live_server.url, token=token_for(carol, scopes=[Scope.ADMIN, Scope.REVIEW])).list_repo_files(
            "acme/draft", revision=revision.commit
        )
    path = hf_hub_download(
        "acme/draft",
        "config.json",
        revision=revision.commit,
        endpoint=live_server.url,
        token=token_for(carol, scopes=[Scope.ADMIN, Scope.READ]),
        cache_dir=tmp_path / "admin",
    )
    assert Path(path).exists()


def test_a_staff_read_token_sees_no_private_repo_it_holds_no_grant_for(live_server, gated):
    gated.private = True
    gated.save()
    carol = person("carol", staff=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=live_server.url, token=token_for(carol, scopes=[Scope.READ])).model_info("acme/tiny")
    assert HfApi(endpoint=live_server.url, token=token_for(carol)).model_info("acme/tiny").id == "acme/tiny"


def test_a_token_without_the_read_scope_downloads_nothing(gated):
    alice = person("alice")
    grant_access(alice, gated, granted_by=None)
    refused = head(token_for(alice, scopes=[Scope.REVIEW]))
    assert refused.status_code == 403
    assert "created without the read scope" in refused["X-Error-Message"]
    assert head(token_for(alice, scopes=[Scope.READ])).status_code == 200


def test_a_reviewers_read_token_downloads_what_its_owner_may(gated):
    gated.private, gated.gated = True, False
    gated.save()
    bob = person("bob", reviews=[gated])
    assert head(token_for(bob, scopes=[Scope.READ])).status_code == 200
    refused = head(token_for(bob, scopes=[Scope.PUBLISH]))
    assert refused.status_code == 404 and refused["X-Error-Code"] == "RepoNotFound"


def test_only_a_publish_token_of_a_named_publisher_may_publish(gated):
    other = Repo.objects.create(org="acme", name="other")
    paula = person("paula")
    assign_publisher(paula, gated, via="test")
    publish = ApiToken.issue(paula, "ci", scopes=[Scope.PUBLISH])[0]
    assert gate.may_publish(paula, gated, publish) and not gate.may_publish(paula, other, publish)
    with pytest.raises(AccessDenied, match="created without the publish scope"):
        gate.permit_publish(paula, gated, ApiToken.issue(paula, "laptop", scopes=[Scope.READ])[0])
    with pytest.raises(AccessDenied, match="staff name its publishers"):
        gate.permit_publish(paula, other, publish)
    elsewhere = ApiToken.issue(paula, "ci", scopes=[Scope.PUBLISH], repos=[other])[0]
    with pytest.raises(AccessDenied) as raised:
        gate.permit_publish(paula, gated, elsewhere)
    assert raised.value.code == "RepoNotFound"

    carol = person("carol", staff=True)
    assert not gate.may_publish(carol, gated, ApiToken.issue(carol, "ci", scopes=[Scope.PUBLISH])[0])
    assert gate.may_publish(carol, gated, ApiToken.issue(carol, "ci", scopes=[Scope.PUBLISH, Scope.ADMIN])[0])


def test_a_publishers_publish_token_sees_the_private_repo_it_publishes_to(gated):
    gated.private = True
    gated.save()
    paula = person("paula")
    assign_publisher(paula, gated, via="test")
    path = "/api/models/acme/tiny/revision/main"
    assert (
        Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token_for(paula, scopes=[Scope.PUBLISH])}").status_code == 200
    )
    hidden = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token_for(paula, scopes=[Scope.READ])}")
    assert hidden.status_code == 404
