"""A token limited to some repos reaches those and acts as if no other repo existed, even where its
owner holds a grant or reviews: downloads, trees, the Hub's request lists and the REST API's lists."""

import json

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from access.models import AccessRequest, Scope
from access.services import grant_access
from distribution.models import Repo
from tests.support.flows import http, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_repos(tmp_path):
    """acme/tiny and acme/other, both released; alice holds a grant to each and has downloaded from each."""
    tiny, _ = published_tiny_llama(tmp_path / "tiny", "acme/tiny", verify_here=True)
    other, _ = published_tiny_llama(tmp_path / "other", "acme/other", verify_here=True, seed=1)
    alice = person("alice")
    for revision in (tiny, other):
        grant_access(alice, revision.repo, granted_by=None)
    return tiny.repo, other.repo, alice


def test_a_token_limited_to_one_repo_downloads_and_lists_nothing_of_another(live_server, two_repos, tmp_path):
    tiny, other, alice = two_repos
    everywhere = token_for(alice)
    for repo_id in ("acme/tiny", "acme/other"):
        hf_hub_download(repo_id, "config.json", endpoint=live_server.url, token=everywhere, cache_dir=tmp_path / "c")
    limited = token_for(alice, "cluster", scopes=[Scope.READ], repos=[other])
    hub = HfApi(endpoint=live_server.url, token=limited)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/tiny", "config.json", endpoint=live_server.url, token=limited, cache_dir=tmp_path / "d")
    with pytest.raises(RepositoryNotFoundError):
        hub.list_repo_files("acme/tiny")
    with pytest.raises(RepositoryNotFoundError):
        hub.model_info("acme/tiny")
    assert "config.json" in hub.list_repo_files("acme/other")
    hf_hub_download("acme/other", "config.json", endpoint=live_server.url, token=limited, cache_dir=tmp_path / "e")

    def listed(path):
        status, _, body = http("GET", f"{live_server.url}{path}", token=limited)
        assert status == 200
        return {row["repo"] for row in json.loads(body)["results"]}  # the first page holds them all

    assert listed("/api/v1/me/downloads/") == {"acme/other"}
    for repo in (tiny, other):
        AccessRequest.objects.create(user=alice, repo=repo, license_version="1", state=AccessRequest.State.ACCEPTED)
    assert listed("/api/v1/access-requests/") == {"acme/other"}


def test_a_reviewers_token_limited_to_one_repo_reviews_and_audits_no_other(client):
    tiny = Repo.objects.create(org="acme", name="tiny")
    other = Repo.objects.create(org="acme", name="other")
    bob = person("bob", reviews=[tiny, other])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token_for(bob, scopes=[Scope.REVIEW], repos=[other])}"}
    assert list(client.get("/api/v1/counts/", **auth).json()) == ["acme/other"]
    assert client.get("/api/models/acme/tiny/user-access-request/pending", **auth).status_code == 404
    assert client.get("/api/models/acme/other/user-access-request/pending", **auth).status_code == 200
    assert client.get("/api/v1/audit/downloads/?repo=acme/tiny", **auth).status_code == 404
    assert client.get("/api/v1/audit/downloads/?repo=acme/other", **auth).status_code == 200


def test_a_limited_token_whose_repos_are_all_gone_reaches_no_repo(client):
    tiny = Repo.objects.create(org="acme", name="tiny")
    gone = Repo.objects.create(org="acme", name="gone")
    alice = person("alice", reviews=[tiny])
    token = token_for(alice, scopes=[Scope.READ, Scope.REVIEW], repos=[gone])
    gone.delete()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get("/api/models/acme/tiny/user-access-request/pending", **auth).status_code == 404
    assert client.get("/api/v1/counts/", **auth).status_code == 403
