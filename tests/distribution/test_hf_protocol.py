"""The Hugging Face client, unchanged, against the portal: downloads, revisions, patterns, errors."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from access.models import Grant
from access.services import grant_access
from distribution.models import Repo, Revision
from tests.support.flows import expected_release, http, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"


@pytest.fixture
def released(tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, REPO_ID, verify_here=True)
    return revision, checkpoint


@pytest.fixture
def alice_token(released):
    alice = person("alice")
    grant_access(alice, released[0].repo, granted_by=None)
    return token_for(alice)


def test_hf_hub_download_fetches_one_file_byte_identical(live_server, released, alice_token, tmp_path):
    _revision, checkpoint = released
    path = hf_hub_download(
        REPO_ID, "config.json", endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "c"
    )
    assert Path(path).read_bytes() == (checkpoint / "config.json").read_bytes()
    # The client stores each blob under its etag, which the portal makes the sha256 of the content.
    blob = Path(os.path.realpath(path))
    assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_allow_patterns_fetches_only_the_matching_files(live_server, released, alice_token, tmp_path):
    folder = Path(
        snapshot_download(
            REPO_ID, endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "c", allow_patterns=["*.json"]
        )
    )
    names = sorted(p.name for p in folder.rglob("*") if p.is_file())
    assert names == ["config.json", "generation_config.json", "model.safetensors.index.json"]


def test_a_revision_named_by_its_commit_downloads_that_revision(live_server, released, alice_token, tmp_path):
    revision, checkpoint = released
    folder = Path(
        snapshot_download(
            REPO_ID, revision=revision.commit, endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "c"
        )
    )
    assert folder.name == revision.commit
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == (
        checkpoint / "model-00002-of-00002.safetensors"
    ).read_bytes()


def test_the_hf_download_command_works_against_the_portal(live_server, released, alice_token, tmp_path):
    revision, checkpoint = released
    env = {**os.environ, "HF_ENDPOINT": live_server.url, "HF_TOKEN": alice_token, "HF_HOME": str(tmp_path / "home")}
    env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN")  # the command reads HF_TOKEN as a person's shell would give it
    hf = Path(sys.executable).parent / "hf"
    result = subprocess.run(
        [str(hf), "download", REPO_ID, "--local-dir", str(tmp_path / "out"), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for path, content in expected_release(revision, checkpoint).items():
        assert (tmp_path / "out" / path).read_bytes() == content


def test_without_a_grant_the_client_raises_gated_repo_error(live_server, released, tmp_path):
    stranger_token = token_for(person("dave"))
    with pytest.raises(GatedRepoError):
        hf_hub_download(
            REPO_ID, "config.json", endpoint=live_server.url, token=stranger_token, cache_dir=tmp_path / "a"
        )
    with pytest.raises(GatedRepoError):
        hf_hub_download(REPO_ID, "config.json", endpoint=live_server.url, token=False, cache_dir=tmp_path / "b")


def test_a_revoked_grant_stops_downloads_at_once(live_server, released, alice_token, tmp_path):
    Grant.objects.update(revoked_at=Grant.objects.get().created_at)
    with pytest.raises(GatedRepoError):
        hf_hub_download(REPO_ID, "config.json", endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "c")


def test_unknown_and_private_repos_look_the_same_from_outside(live_server, released, alice_token, tmp_path):
    Repo.objects.create(org="acme", name="secret", private=True)
    outsider = token_for(person("erin"))
    for repo_id in ("acme/secret", "acme/does-not-exist"):
        with pytest.raises(RepositoryNotFoundError) as raised:
            hf_hub_download(repo_id, "config.json", endpoint=live_server.url, token=outsider, cache_dir=tmp_path / "c")
        assert not isinstance(raised.value, GatedRepoError)
    secret = http("GET", f"{live_server.url}/api/models/acme/secret/revision/main", token=outsider)
    missing = http("GET", f"{live_server.url}/api/models/acme/nothing/revision/main", token=outsider)
    assert secret[0] == missing[0] == 404
    assert secret[2].replace(b"secret", b"X") == missing[2].replace(b"nothing", b"X")


def test_unknown_revision_and_missing_file_raise_their_own_errors(live_server, released, alice_token, tmp_path):
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO_ID,
            "config.json",
            revision="f" * 40,
            endpoint=live_server.url,
            token=alice_token,
            cache_dir=tmp_path / "a",
        )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            REPO_ID, "no-such-file.json", endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "b"
        )


def test_a_verified_but_unreleased_revision_serves_nothing(live_server, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/draft", release=False, verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            "acme/draft",
            "config.json",
            revision=revision.commit,
            endpoint=live_server.url,
            token=token_for(alice),
            cache_dir=tmp_path / "a",
        )
    staff_token = token_for(person("carol", staff=True))
    path = hf_hub_download(
        "acme/draft",
        "config.json",
        revision=revision.commit,
        endpoint=live_server.url,
        token=staff_token,
        cache_dir=tmp_path / "b",
    )
    assert Path(path).exists()


def test_whoami_names_the_token_owner_and_refuses_a_bad_token(live_server, released, alice_token):
    assert HfApi(endpoint=live_server.url).whoami(token=alice_token)["name"] == "alice"
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=live_server.url).whoami(token="wg_not-a-real-token")


def test_reviewers_of_another_repo_cannot_handle_requests(live_server, released):
    other = Repo.objects.create(org="acme", name="other")
    outsider_token = token_for(person("bob", reviews=[other]))
    hub = HfApi(endpoint=live_server.url, token=outsider_token)
    with pytest.raises(HfHubHTTPError) as raised:
        list(hub.list_pending_access_requests(REPO_ID))
    assert raised.value.response.status_code == 403


def test_reviewers_reject_with_a_reason_cancel_and_grant_through_the_hub_client(live_server, released):
    repo = released[0].repo
    from access.models import AccessRequest

    for name in ("erin", "frank"):
        AccessRequest.objects.create(user=person(name), repo=repo, license_version="1")
    person("gina")
    hub = HfApi(endpoint=live_server.url, token=token_for(person("bob", reviews=[repo])))
    hub.reject_access_request(REPO_ID, user="erin", rejection_reason="please tell us more")
    rejected = list(hub.list_rejected_access_requests(REPO_ID))
    assert [r.username for r in rejected] == ["erin"]
    hub.accept_access_request(REPO_ID, user="frank")
    hub.cancel_access_request(REPO_ID, user="frank")  # back to pending: the grant goes
    assert [r.username for r in hub.list_pending_access_requests(REPO_ID)] == ["frank"]
    assert not Grant.active().filter(user__username="frank").exists()
    assert hub.grant_access(REPO_ID, user="gina") == {"user": "gina", "status": "accepted"}
    assert Grant.active().filter(user__username="gina").exists()
    assert AccessRequest.objects.get(user__username="erin").rejection_reason == "please tell us more"


def test_a_revision_named_by_its_tag_downloads_that_revision(live_server, alice_token, tmp_path):
    import io

    from django.core.management import call_command

    older = Revision.objects.get(repo__name="tiny")
    call_command("release", REPO_ID, "--revision", older.commit, "--tag", "v1.0", stdout=io.StringIO())
    newer, _ = published_tiny_llama(tmp_path / "newer", REPO_ID, verify_here=True)
    assert HfApi(endpoint=live_server.url).model_info(REPO_ID, revision="main", token=alice_token).sha == newer.commit
    path = hf_hub_download(
        REPO_ID,
        "config.json",
        revision="v1.0",
        endpoint=live_server.url,
        token=alice_token,
        cache_dir=tmp_path / "cache",
    )
    assert Path(path).parent.name == older.commit
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO_ID,
            "config.json",
            revision="v9.9",
            endpoint=live_server.url,
            token=alice_token,
            cache_dir=tmp_path / "cache2",
        )


def test_a_release_landing_between_the_clients_head_and_get_does_not_mix_revisions(
    live_server, released, alice_token, tmp_path, monkeypatch
):
    """The real client; only its metadata call is wrapped, to publish a new release at the worst moment."""
    import huggingface_hub.file_download as file_download

    first, checkpoint = released
    shard = "model-00002-of-00002.safetensors"
    original = file_download.get_hf_file_metadata

    def head_then_release(*args, **kwargs):
        metadata = original(*args, **kwargs)
        if not Revision.objects.filter(repo=first.repo, state=Revision.State.RELEASED).exclude(pk=first.pk).exists():
            published_tiny_llama(tmp_path / "second", REPO_ID, verify_here=True, seed=1)  # same sizes, new bytes
        return metadata

    monkeypatch.setattr(file_download, "get_hf_file_metadata", head_then_release)
    path = Path(hf_hub_download(REPO_ID, shard, endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "c"))
    second = Revision.objects.filter(repo=first.repo).exclude(pk=first.pk).get()
    assert (
        second.state == Revision.State.RELEASED
        and second.files.get(path=shard).sha256 != first.files.get(path=shard).sha256
    )
    assert path.read_bytes() == (checkpoint / shard).read_bytes()  # the revision the HEAD named, whole
    assert Path(os.path.realpath(path)).name == hashlib.sha256(path.read_bytes()).hexdigest()
