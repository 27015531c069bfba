"""Publishing with the real Hub client against a live portal: create_repo, upload_folder, create_commit and
`hf upload`, over the LFS protocol (basic and multipart) into local storage and into S3 (SeaweedFS), each
commit a revision that a real worker verifies; and every refusal in the Hub's shape.

The installed client uploads by Xet when hf_xet is installed; the portal speaks LFS, so these uploads run
with HF_HUB_DISABLE_XET=1, the client's own switch (a Xet upload is refused with that advice)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from access.models import Publisher, Scope
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import LfsObject, Repo, Revision
from distribution.storage import get_storage
from tests.support.flows import wait_for_verdict
from tests.support.personas import person, token_for
from verification.core.tiny_llama import write_tiny_llama
from verification.models import FileCheck

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


@pytest.fixture
def hub(live_server, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return HfApi(endpoint=live_server.url)


@pytest.fixture
def paula():
    """A publisher of acme/first (so she may create repos in acme), with a token that publishes."""
    user = person("paula")
    Publisher.objects.create(user=user, repo=Repo.objects.create(org="acme", name="first"))
    return token_for(user, scopes=[Scope.READ, Scope.PUBLISH])


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_tiny_llama(tmp_path / "checkpoint", shards=2)


def stored_bytes(revision: Revision) -> dict[str, bytes]:
    storage = get_storage(revision.storage_backend)
    files = {}
    for row in revision.files.all():
        with storage.open(row.storage_key) as handle:
            files[row.path] = handle.read()
    return files


def local_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_a_publisher_creates_a_repo_and_upload_folder_ends_verified_by_a_worker(hub, paula, checkpoint, worker):
    url = hub.create_repo(REPO_ID, token=paula)
    assert url.repo_id == REPO_ID
    assert hub.create_repo(REPO_ID, token=paula, exist_ok=True).repo_id == REPO_ID
    with pytest.raises(HfHubHTTPError) as exists:
        hub.create_repo(REPO_ID, token=paula)
    assert exists.value.response.status_code == 409
    info = hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula, commit_message="first weights")
    revision = Revision.objects.get(commit=info.oid)
    assert revision.published_by.username == "paula"
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    assert {path: data for path, data in stored_bytes(revision).items() if path != "model.sig"} == local_files(
        checkpoint
    )
    published = AuditEvent.objects.get(tag=Tag.REVISION_PUBLISHED, data__commit=revision.commit)
    assert published.actor_username == "paula" and published.data["summary"] == "first weights"
    assert AuditEvent.objects.filter(tag=Tag.REPO_CREATED, repo_id=REPO_ID).count() == 1
