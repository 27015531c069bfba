"""A Hub commit stores only the files sent inline under its revision's prefix: its uploaded files, and the
files it carries from the head revision, are referred to where they are (RevisionFile.object_key), never
copied. The revision verifies and downloads as any other; nothing deletes bytes a revision refers to; and a
referred-to object replaced behind the portal's back fails verification instead of being read as the file.
With the real Hub client, against SeaweedFS and local storage."""

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from huggingface_hub import CommitOperationAdd, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from access.services import grant_access
from distribution import hf_publish, lfs
from distribution.models import LfsObject, Revision
from distribution.publishing import discard_draft, start_draft
from distribution.storage import get_storage
from tests.support.flows import wait_for_verdict
from tests.support.personas import person, token_for
from tests.support.publishing import bucket_keys, local_files, stored_bytes
from tests.support.servers import s3_client, versioned_bucket
from verification import services
from verification.core.signature import SIGNATURE_PATH
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write_tiny_llama(tmp_path / "checkpoint", shards=2)


@pytest.fixture(params=["local", "s3"])
def storage_name(request) -> str:
    if request.param == "s3":
        request.getfixturevalue("on_s3")
    return request.param


@pytest.fixture
def unverified(monkeypatch):
    """Commits are not sent to a worker: the test verifies, when it does, in this process."""
    monkeypatch.setattr(hf_publish.current_app, "send_task", lambda *args, **kwargs: None)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def under_prefix(revision: Revision) -> list[str]:
    """What storage holds under the revision's own prefix, but the signature verification adds."""
    stored = get_storage(revision.storage_backend).stored_objects(revision.storage_prefix)
    return sorted(path for path in stored if path != SIGNATURE_PATH)


def committed(hub, paula, folder: Path, **options) -> Revision:
    return Revision.objects.get(
        commit=hub.upload_folder(repo_id=REPO_ID, folder_path=folder, token=paula, **options).oid
    )


def reader_token(revision: Revision) -> str:
    call_command("release", REPO_ID, "--revision", revision.commit, stdout=io.StringIO())
    rita = person("rita")
    grant_access(rita, revision.repo, granted_by=None)
    return token_for(rita)


def test_a_commit_of_uploaded_files_stores_no_copy_and_verifies_and_downloads_byte_exact(
    hub, paula, checkpoint, storage_name, worker, live_server, tmp_path
):
    hub.create_repo(REPO_ID, token=paula)
    revision = committed(hub, paula, checkpoint)
    assert revision.storage_backend == storage_name
    # only the small files sent inline are under the revision's prefix; each shard is its accepted upload
    assert under_prefix(revision) == sorted(p.name for p in checkpoint.iterdir() if p.suffix != ".safetensors")
    uploads = {upload.oid: upload for upload in LfsObject.objects.filter(repo=revision.repo)}
    for path in (SHARD_1, SHARD_2):
        row, upload = revision.files.get(path=path), uploads[sha256_of(checkpoint / path)]
        assert upload.state == LfsObject.State.ACCEPTED
        assert (row.object_key, row.stored_etag, row.storage_key) == (upload.key, upload.etag.strip('"'), upload.key)
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    assert under_prefix(revision) == sorted(p.name for p in checkpoint.iterdir() if p.suffix != ".safetensors")

    folder = snapshot_download(
        REPO_ID, endpoint=live_server.url, token=reader_token(revision), local_dir=tmp_path / "s"
    )
    downloaded = {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}
    assert downloaded.pop(SIGNATURE_PATH)
    assert downloaded == local_files(checkpoint)


def test_a_commit_changing_one_shard_refers_to_the_files_it_carries_where_they_are(
    hub, paula, checkpoint, on_s3, tmp_path, worker
):
    hub.create_repo(REPO_ID, token=paula)
    first = committed(hub, paula, checkpoint)
    assert wait_for_verdict(first).state == Revision.State.VERIFIED, first.failure_reason
    before = set(bucket_keys(on_s3, ""))
    retrained = write_tiny_llama(tmp_path / "retrained", shards=2, seed=1)
    second = committed(hub, paula, retrained, allow_patterns=[SHARD_2])
    assert wait_for_verdict(second).state == Revision.State.VERIFIED, second.failure_reason

    upload = LfsObject.objects.get(oid=sha256_of(retrained / SHARD_2))
    # the one new upload and the new revision's signature: nothing of the files it carries was stored again
    assert set(bucket_keys(on_s3, "")) - before == {upload.key, f"{second.storage_prefix}/{SIGNATURE_PATH}"}
    earlier = {row.path: row for row in first.files.all()}
    for row in second.files.exclude(path__in=[SHARD_2, SIGNATURE_PATH]):
        # the very object the first revision's file is (an upload, or a file under its prefix), at its version
        assert (row.object_key, row.stored_etag) == (earlier[row.path].storage_key, earlier[row.path].stored_etag)
    assert second.files.get(path=SHARD_2).object_key == upload.key
    files = {path: data for path, data in stored_bytes(second).items() if path != SIGNATURE_PATH}
    assert files == {**local_files(checkpoint), SHARD_2: (retrained / SHARD_2).read_bytes()}


def test_in_a_versioned_bucket_the_files_a_commit_carries_keep_the_version_first_verified(
    hub, paula, checkpoint, on_s3, unverified, settings, tmp_path
):
    """Their checks are reused, never read again, and so is the VersionId that was read: the links of the
    new revision name the very bytes the first one verified."""
    settings.S3_BUCKET = versioned_bucket(on_s3)
    hub.create_repo(REPO_ID, token=paula)
    first = committed(hub, paula, checkpoint)
    services.run_checks_stage(first.pk)
    retrained = write_tiny_llama(tmp_path / "retrained", shards=2, seed=1)
    second = committed(hub, paula, retrained, allow_patterns=[SHARD_2])
    services.run_checks_stage(second.pk)

    earlier = {row.path: row for row in first.files.all()}
    checks = {check.path: check for check in second.file_checks.all()}
    for row in second.files.all():
        assert row.stored_version and checks[row.path].version_id == row.stored_version, row.path
        if row.path == SHARD_2:
            assert checks[row.path].claims == 1 and row.stored_version != earlier[row.path].stored_version
        else:
            assert checks[row.path].checked_by.startswith("reused"), row.path
            assert row.stored_version == earlier[row.path].stored_version, row.path


def test_the_daily_job_keeps_the_uploads_a_revision_refers_to_and_deletes_the_others(
    hub, paula, checkpoint, storage_name, unverified, tmp_path
):
    hub.create_repo(REPO_ID, token=paula)
    revision = committed(hub, paula, checkpoint)
    shards = list(revision.files.exclude(object_key=""))
    referred = {row.object_key for row in shards}
    # an upload no commit names (the client uploads before it commits), and a draft referring to the
    # revision's uploads, as a commit cut off before its end leaves one, then discarded
    other = write_tiny_llama(tmp_path / "other", shards=2, seed=2) / SHARD_1
    hub.preupload_lfs_files(REPO_ID, [CommitOperationAdd(SHARD_1, str(other))], token=paula)
    unclaimed = LfsObject.objects.get(oid=sha256_of(other))
    draft = Revision(commit="d" * 40, state=Revision.State.DRAFT, storage_backend=storage_name)
    draft = start_draft(
        draft, "acme", "tiny", shards, references={row.path: (row.object_key, row.stored_etag) for row in shards}
    )
    discard_draft(draft, reason="cut off")
    storage = get_storage(storage_name)
    assert all(storage.stored_object(key) is not None for key in referred)

    LfsObject.objects.update(created_at=timezone.now() - timedelta(days=8))
    assert lfs.discard_unclaimed_objects() == 1
    assert set(LfsObject.objects.values_list("key", flat=True)) == referred
    assert storage.stored_object(unclaimed.key) is None
    assert all(storage.stored_object(key) is not None for key in referred)
    # a commit naming a kept upload refers to it through the revision's file; the job leaves it alone again
    assert lfs.stored_source(revision.repo, shards[0].upload_sha256, storage).key == shards[0].object_key
    assert lfs.discard_unclaimed_objects() == 0
    services.run_checks_stage(revision.pk)
    services.run_smoke_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason


def test_an_upload_is_no_longer_offered_to_commits_just_before_the_job_may_delete_it(
    hub, paula, checkpoint, unverified
):
    hub.create_repo(REPO_ID, token=paula)
    shard = checkpoint / SHARD_1
    hub.preupload_lfs_files(REPO_ID, [CommitOperationAdd(SHARD_1, str(shard))], token=paula)
    upload = LfsObject.objects.get(oid=sha256_of(shard))
    storage = get_storage(upload.storage_backend)
    assert lfs.stored_source(upload.repo, upload.oid, storage).key == upload.key
    near_the_cutoff = lfs.discard_cutoff() + lfs.OFFERED_MARGIN - timedelta(minutes=1)
    LfsObject.objects.filter(pk=upload.pk).update(created_at=near_the_cutoff)
    assert lfs.stored_source(upload.repo, upload.oid, storage) is None  # the client uploads it again


def replace_behind_the_portal(endpoint, key: str, data: bytes) -> None:
    s3_client(endpoint).put_object(Bucket=endpoint.bucket, Key=key, Body=data)


def test_an_upload_replaced_before_verification_fails_it_as_content_changed(hub, paula, checkpoint, on_s3, unverified):
    hub.create_repo(REPO_ID, token=paula)
    revision = committed(hub, paula, checkpoint)
    row = revision.files.get(path=SHARD_1)
    replace_behind_the_portal(on_s3, row.object_key, os.urandom(row.size))  # the same size, other bytes
    services.run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    assert ("ContentChanged", SHARD_1) in set(revision.checks.values_list("code", "file"))
    assert "replaced" in revision.failure_reason


def test_a_released_revision_whose_upload_is_replaced_is_withdrawn_and_serves_nothing(
    hub, paula, checkpoint, on_s3, unverified, live_server, tmp_path
):
    hub.create_repo(REPO_ID, token=paula)
    revision = committed(hub, paula, checkpoint)
    services.run_checks_stage(revision.pk)
    services.run_smoke_stage(revision.pk)
    token = reader_token(revision)
    key = revision.files.get(path=SHARD_2).object_key
    replace_behind_the_portal(on_s3, key, b"other weights, shorter")
    revision.refresh_from_db()
    run = services.reverify(revision)
    assert not run.ok and ("SizeChanged", SHARD_2) in set(run.checks.values_list("code", "file"))
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(REPO_ID, SHARD_2, endpoint=live_server.url, token=token, cache_dir=tmp_path / "c")
    assert not any(path.is_file() for path in (tmp_path / "c").rglob(SHARD_2))


def test_after_an_upload_was_replaced_the_folder_uploaded_again_sends_that_file_and_verifies(
    hub, paula, checkpoint, on_s3, unverified
):
    hub.create_repo(REPO_ID, token=paula)
    revision = committed(hub, paula, checkpoint)
    row = revision.files.get(path=SHARD_1)
    replace_behind_the_portal(on_s3, row.object_key, os.urandom(row.size))
    services.run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    # The publisher sends the same folder again: the replaced upload is not offered as held, so the client
    # sends that file's bytes again, and the new revision is the checkpoint as published.
    again = committed(hub, paula, checkpoint)
    assert again.pk != revision.pk
    services.run_checks_stage(again.pk)
    services.run_smoke_stage(again.pk)
    again.refresh_from_db()
    assert again.state == Revision.State.VERIFIED, again.failure_reason
    assert stored_bytes(again)[SHARD_1] == (checkpoint / SHARD_1).read_bytes()
