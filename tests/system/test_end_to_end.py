"""One checkpoint the whole way: published, verified by a worker process, released, requested,
approved over the Hub API, downloaded with the Hugging Face client, and recorded."""

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import GatedRepoError

from distribution.models import DownloadEvent, Revision
from tests.support.flows import expected_release, http, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_checkpoint_travels_from_publish_to_recorded_download(storage, worker, live_server, tmp_path):
    repo_id = f"acme/tiny-llama-{storage}"
    revision, checkpoint = published_tiny_llama(tmp_path, repo_id, storage)
    assert revision.state == Revision.State.RELEASED
    released_files = expected_release(revision, checkpoint)
    assert {stored.path for stored in revision.files.all()} == set(released_files)
    for stored in revision.files.all():
        assert stored.sha256 == hashlib.sha256(released_files[stored.path]).hexdigest()
    assert revision.checks.filter(status="fail").count() == 0
    assert revision.checks.filter(code="HeaderValid").count() == 2

    alice = person("alice")
    bob = person("bob", reviews=[revision.repo])
    alice_token, bob_token = token_for(alice), token_for(bob)

    with pytest.raises(GatedRepoError):
        snapshot_download(repo_id, endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "before")
    assert not DownloadEvent.objects.exists()

    status, _, body = http(
        "POST",
        f"{live_server.url}/api/v1/access-requests/",
        token=alice_token,
        body={"repo": repo_id, "fields": {}, "accept_license": True},
    )
    assert status == 201, body
    assert json.loads(body)["state"] == "pending"

    hub = HfApi(endpoint=live_server.url, token=bob_token)
    assert [r.username for r in hub.list_pending_access_requests(repo_id)] == ["alice"]
    hub.accept_access_request(repo_id, user="alice")
    assert [r.username for r in hub.list_accepted_access_requests(repo_id)] == ["alice"]

    folder = snapshot_download(repo_id, endpoint=live_server.url, token=alice_token, cache_dir=tmp_path / "after")
    folder = Path(folder)
    downloaded = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    published = sorted(stored.path for stored in revision.files.all())
    assert downloaded == published
    for relative in published:
        assert released_files[relative] == (folder / relative).read_bytes()

    events = DownloadEvent.objects.filter(username="alice").order_by("path")
    assert [event.path for event in events] == published
    expected_channel = "local" if storage == "local" else "s3-redirect"
    for event in events:
        assert event.channel == expected_channel
        assert event.repo_id == repo_id
        assert event.commit == revision.commit
        assert event.grant is not None and event.grant.user == alice
        assert event.ip == "127.0.0.1"
        assert "hf_hub" in event.user_agent
        if storage == "local":
            assert event.bytes_served == event.file.size
