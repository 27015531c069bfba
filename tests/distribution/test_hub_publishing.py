"""Publishing with the real Hub client against a live portal: create_repo, upload_folder, create_commit and
`hf upload`, over the LFS protocol (basic and multipart) into local storage and into S3 (SeaweedFS), each
commit a revision that a real worker verifies; and every refusal in the Hub's shape.

The installed client uploads by Xet when hf_xet is installed (test_hub_xet.py); these uploads run with
HF_HUB_DISABLE_XET=1, the client's own switch, so they go by LFS."""

import hashlib
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from access.models import Publisher, Scope
from access.services import grant_access
from audit.models import AuditEvent
from audit.tags import Tag
from distribution import hf_publish, lfs
from distribution.models import LfsObject, Repo, Revision
from tests.support.flows import http, wait_for_verdict
from tests.support.lock_order import both_committed, started, worker_storing_a_verdict
from tests.support.personas import person, token_for
from tests.support.publishing import (
    IN_PARTS,
    MIB,
    bucket_keys,
    commit_lines,
    lfs_upload_actions,
    local_files,
    stored_bytes,
)
from verification import services
from verification.core.tiny_llama import write_tiny_llama
from verification.models import FileCheck

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


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


def test_create_commit_sends_large_files_to_s3_in_presigned_parts_and_is_verified(hub, paula, on_s3, tmp_path, worker):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides=IN_PARTS)
    hub.create_repo(REPO_ID, token=paula, exist_ok=True)
    operations = [CommitOperationAdd(path.name, str(path)) for path in sorted(checkpoint.iterdir())]
    info = hub.create_commit(REPO_ID, operations, commit_message="in parts", token=paula)
    revision = Revision.objects.get(commit=info.oid)
    assert revision.storage_backend == "s3"
    uploads = LfsObject.objects.filter(repo__name="tiny")
    # every shard went up in parts, straight to S3, and was accepted once its sha256 was read back
    assert sorted(uploads.values_list("part_size", "state")) == [(5 * MIB, "accepted")] * 3
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    assert {p: d for p, d in stored_bytes(revision).items() if p != "model.sig"} == local_files(checkpoint)


def hf_cli(*args: str, endpoint: str, token: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HUB_DISABLE_IMPLICIT_TOKEN": ""}
    env["HF_HUB_DISABLE_XET"] = "1"
    hf = str(Path(sys.executable).with_name("hf"))
    return subprocess.Popen([hf, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_hf_upload_publishes_a_folder_by_lfs(live_server, paula, checkpoint, worker):
    upload = hf_cli("upload", REPO_ID, str(checkpoint), endpoint=live_server.url, token=paula)
    output = upload.communicate(timeout=120)[0]
    assert upload.returncode == 0, output[-2000:]
    revision = Revision.objects.get(repo__name="tiny")
    assert revision.commit in output
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason


# 19 kB, and (S3) 21 MB: read back in several ranges at once, the last one short.
@pytest.mark.parametrize(("storage", "scale"), [("local", 1), ("s3", 1), ("s3", 1100)])
def test_bytes_that_are_not_the_oid_are_refused_and_nothing_is_kept(
    live_server, paula, storage, scale, request, settings
):
    if storage == "s3":
        request.getfixturevalue("on_s3")
    Repo.objects.create(org="acme", name="tiny")
    Publisher.objects.create(user=Publisher.objects.get(repo__name="first").user, repo=Repo.objects.get(name="tiny"))
    announced, sent = b"the bytes announced" * 1000 * scale, b"other bytes, as long" * 950 * scale
    oid = hashlib.sha256(announced).hexdigest()
    actions = lfs_upload_actions(live_server.url, paula, REPO_ID, oid, len(sent), "basic")
    put = urllib.request.Request(actions["upload"]["href"], data=sent, method="PUT")
    try:
        with urllib.request.urlopen(put, timeout=30) as answer:
            stored_status = answer.status
    except urllib.error.HTTPError as error:  # local storage hashes while it writes: refused at the PUT
        stored_status, message = error.code, error.headers["X-Error-Message"]
    if storage == "s3":
        assert stored_status == 200  # S3 took the PUT; the portal judges it at the verify step
        status, headers, _ = http("POST", actions["verify"]["href"], token=paula, body={"oid": oid, "size": len(sent)})
        stored_status, message = status, headers["X-Error-Message"]
    assert stored_status == 400 and "not the oid" in message
    assert not LfsObject.objects.exists()
    if storage == "s3":
        assert bucket_keys(on_s3_endpoint(request), f"uploads/acme/tiny/{oid}/") == []
    else:
        # This upload's folder only: an upload of another test, announced and never sent, stays staged.
        assert not any(Path(settings.LOCAL_STORAGE_ROOT, f"uploads/acme/tiny/{oid}").rglob("*"))
    # a commit naming it is refused: nothing of it was accepted
    with pytest.raises(HfHubHTTPError, match="no accepted upload"):
        commit_lines(live_server.url, paula, [{"key": "lfsFile", "value": {"path": "x.safetensors", "oid": oid}}])


def on_s3_endpoint(request):
    return request.getfixturevalue("s3_endpoint")


def test_a_pickle_is_refused_at_preupload_with_a_clear_message(hub, paula, checkpoint):
    hub.create_repo(REPO_ID, token=paula, exist_ok=True)
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    (checkpoint / "notes.weights").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(HfHubHTTPError) as refused:
        hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula)
    assert refused.value.response.status_code == 400
    assert "pytorch_model.bin is a pickle-based file" in str(refused.value)
    assert "notes.weights is a pickle-based file" in str(refused.value)
    assert not LfsObject.objects.exists() and not Revision.objects.filter(repo__name="tiny").exists()


def test_readers_tokens_without_publish_and_the_anonymous_are_refused_as_the_hub_refuses(hub, paula, checkpoint):
    hub.create_repo(REPO_ID, token=paula)
    repo = Repo.objects.get(name="tiny")
    reader = person("rita")
    grant_access(reader, repo, granted_by=None)
    paula_reads = token_for(Publisher.objects.get(repo=repo).user, scopes=[Scope.READ])
    operations = [CommitOperationAdd("config.json", str(checkpoint / "config.json"))]
    for token, status, words in [
        (token_for(reader), 403, "may not publish"),
        (paula_reads, 403, "publish scope"),
        (False, 401, "token"),
    ]:
        with pytest.raises(HfHubHTTPError) as refused:
            hub.create_commit(REPO_ID, operations, commit_message="no", token=token)
        assert refused.value.response.status_code == status and words in str(refused.value)
    Repo.objects.filter(pk=repo.pk).update(private=True)
    with pytest.raises(RepositoryNotFoundError):
        hub.create_commit(REPO_ID, operations, commit_message="no", token=token_for(person("mallory")))
    with pytest.raises(HfHubHTTPError) as elsewhere:
        hub.create_repo("globex/new", token=paula)  # a publisher in acme is no one in globex
    assert elsewhere.value.response.status_code == 403
    assert not Revision.objects.exists() and not Repo.objects.filter(org="globex").exists()


def adds(directory: Path, *names: str) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(name, str(directory / name)) for name in names]


def test_a_commit_lacking_shards_waits_incomplete_until_a_later_commit_brings_them(hub, paula, checkpoint, worker):
    hub.create_repo(REPO_ID, token=paula)
    first = hub.create_commit(
        REPO_ID, adds(checkpoint, "config.json", INDEX, SHARD_1), commit_message="part 1", token=paula
    )
    waiting = Revision.objects.get(commit=first.oid)
    assert waiting.state == Revision.State.INCOMPLETE and SHARD_2 in waiting.failure_reason
    second = hub.create_commit(REPO_ID, adds(checkpoint, SHARD_2), commit_message="part 2", token=paula)
    whole = Revision.objects.get(commit=second.oid)
    assert sorted(whole.files.values_list("path", flat=True)) == sorted(["config.json", INDEX, SHARD_1, SHARD_2])
    assert wait_for_verdict(whole).state == Revision.State.VERIFIED, whole.failure_reason
    waiting.refresh_from_db()  # never verified, never failed: the worker had it all along and left it
    assert waiting.state == Revision.State.INCOMPLETE and not FileCheck.objects.filter(revision=waiting).exists()
    with pytest.raises(CommandError, match="incomplete"):  # nor is it ever released
        call_command("release", REPO_ID, "--revision", waiting.commit, stdout=io.StringIO(), stderr=io.StringIO())


def test_a_commit_changing_one_shard_checks_only_that_shard_again(hub, paula, checkpoint, tmp_path, worker):
    hub.create_repo(REPO_ID, token=paula)
    first = Revision.objects.get(commit=hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula).oid)
    assert wait_for_verdict(first).state == Revision.State.VERIFIED, first.failure_reason
    retrained = write_tiny_llama(tmp_path / "retrained", shards=2, seed=1)  # same tensors, other weights
    changed = hub.upload_folder(repo_id=REPO_ID, folder_path=retrained, allow_patterns=[SHARD_2], token=paula)
    second = Revision.objects.get(commit=changed.oid)
    assert wait_for_verdict(second).state == Revision.State.VERIFIED, second.failure_reason
    checks = {check.path: check for check in FileCheck.objects.filter(revision=second)}
    assert checks[SHARD_2].claims == 1 and checks[SHARD_2].sha256 == sha256_of(retrained / SHARD_2)
    for path in ("config.json", INDEX, SHARD_1):  # copied from the first revision's checks, never read again
        assert checks[path].claims == 0 and checks[path].checked_by.startswith("reused"), path
        assert checks[path].sha256 == FileCheck.objects.get(revision=first, path=path).sha256
    # the checks of the whole checkpoint ran again, smoke pass included
    assert {"index", "config", "smoke"} <= set(second.checks.values_list("name", flat=True))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_newer_commit_supersedes_the_verification_of_an_older_one(hub, paula, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_publish.current_app, "send_task", lambda *args, **kwargs: None)  # this test verifies
    hub.create_repo(REPO_ID, token=paula)
    older = Revision.objects.get(commit=hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula).oid)
    pending = services.start_checks(older.pk)  # a worker has begun it
    services.check_stored_file(older.pk, pending[0])
    retrained = write_tiny_llama(tmp_path / "retrained", shards=2, seed=1)
    newer_commit = hub.upload_folder(repo_id=REPO_ID, folder_path=retrained, token=paula).oid
    older.refresh_from_db()
    assert older.state == Revision.State.FAILED and f"superseded by the newer commit {newer_commit}" in (
        older.failure_reason
    )
    assert older.verification_stage == Revision.Stage.NONE
    # the worker that held it checks nothing more and stores no verdict
    assert services.check_stored_file(older.pk, pending[1]) is None
    assert services.finish_checks(older.pk) is None and not older.runs.exists()
    newer = Revision.objects.get(commit=newer_commit)
    services.run_checks_stage(newer.pk)
    services.run_smoke_stage(newer.pk)
    newer.refresh_from_db()
    assert newer.state == Revision.State.VERIFIED, newer.failure_reason
    assert AuditEvent.objects.filter(tag=Tag.REVISION_FAILED, data__commit=older.commit).count() == 1


def test_hf_upload_killed_halfway_sends_only_what_is_missing_when_run_again(
    live_server, paula, on_s3, tmp_path, monkeypatch, worker
):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides=IN_PARTS)
    shards = sorted(path.name for path in checkpoint.glob("*.safetensors"))
    accepted, killed, first = threading.Event(), threading.Event(), threading.Lock()
    accept, killed_runs = lfs.accept, set()

    def first_only(obj):
        """Of the killed run's objects only the first to complete is accepted (the others wait for the kill,
        then fail, even when their request reached the portal just before it); later runs' as usual."""
        if killed.is_set() and obj.pk not in killed_runs:
            return accept(obj)
        killed_runs.add(obj.pk)
        if not first.acquire(blocking=False):
            killed.wait(60)
            raise lfs.Refused("the portal went away", 503)
        accept(obj)
        accepted.set()
        return obj

    monkeypatch.setattr(lfs, "accept", first_only)
    first_run = hf_cli("upload", REPO_ID, str(checkpoint), endpoint=live_server.url, token=paula)
    assert accepted.wait(120), first_run.communicate(timeout=5)[0]
    first_run.send_signal(signal.SIGKILL)
    first_run.wait(30)
    killed_runs.update(LfsObject.objects.values_list("pk", flat=True))
    killed.set()
    kept = LfsObject.objects.get(state=LfsObject.State.ACCEPTED)
    assert not Revision.objects.filter(repo__name="tiny").exists()  # killed before it could commit
    started = LfsObject.objects.order_by("-id").first().pk

    second_run = hf_cli("upload", REPO_ID, str(checkpoint), endpoint=live_server.url, token=paula)
    output = second_run.communicate(timeout=300)[0]
    assert second_run.returncode == 0, output[-3000:]
    sent_again = LfsObject.objects.filter(pk__gt=started)
    sizes = {path: (checkpoint / path).stat().st_size for path in shards}
    # the run again asked to upload only the shards the killed one had not finished, and sent only their bytes
    assert sorted(sent_again.values_list("size", flat=True)) == sorted(
        size for path, size in sizes.items() if sha256_of(checkpoint / path) != kept.oid
    )
    assert not sent_again.filter(oid=kept.oid).exists()
    revision = Revision.objects.get(repo__name="tiny")
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    assert {p: d for p, d in stored_bytes(revision).items() if p != "model.sig"} == local_files(checkpoint)


def test_the_same_folder_uploaded_again_before_release_is_the_same_commit(hub, paula, checkpoint):
    """The client skips files the head already holds and, with nothing left, describes `main`: for a
    publisher that is the head (as on the Hub), released or not, so the second run succeeds."""
    hub.create_repo(REPO_ID, token=paula)
    first = hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula)
    again = hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula)
    assert again.oid == first.oid
    assert Revision.objects.filter(repo__name="tiny").count() == 1
    info = hub.model_info(REPO_ID, token=paula, files_metadata=True)
    assert info.sha == first.oid
    digests = {sibling.rfilename: sibling.lfs.sha256 for sibling in info.siblings if sibling.lfs}
    shard = checkpoint / SHARD_1
    assert digests[SHARD_1] == hashlib.sha256(shard.read_bytes()).hexdigest()
    grantee = person("gina")
    grant_access(grantee, Repo.objects.get(name="tiny"), granted_by=None)
    with pytest.raises(HfHubHTTPError) as unreleased:  # a recipient's `main` is the newest release: none yet
        hub.model_info(REPO_ID, token=token_for(grantee))
    assert unreleased.value.response.status_code == 404


def test_a_newer_commit_and_the_worker_finishing_the_older_one_both_commit(
    hub, paula, checkpoint, tmp_path, monkeypatch
):
    """A commit that supersedes an older revision whose worker is storing its verdict at that moment (the
    row locked, then an audit event): the commit's transaction had taken the audit chain's head (its own
    events) before it moved the older revision, so each waited for the other and PostgreSQL failed one (a
    500 on the commit, or the worker's verdict lost). The commit now locks the older revisions first."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite writes one at a time")
    monkeypatch.setattr(hf_publish.current_app, "send_task", lambda *args, **kwargs: None)  # this test verifies
    hub.create_repo(REPO_ID, token=paula)
    older = Revision.objects.get(commit=hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula).oid)
    services.start_checks(older.pk)
    older.refresh_from_db()
    assert older.state == Revision.State.VERIFYING
    locked, failures = threading.Event(), []
    # The worker holds the older revision for a second: the newer commit arrives meanwhile.
    working = started(lambda: worker_storing_a_verdict(older, locked, pause=1), failures)
    assert locked.wait(10)
    retrained = write_tiny_llama(tmp_path / "retrained", shards=2, seed=1)
    newer_commit = hub.upload_folder(repo_id=REPO_ID, folder_path=retrained, token=paula).oid
    both_committed(failures, working)
    older.refresh_from_db()
    assert older.state == Revision.State.FAILED and "superseded by the newer commit" in older.failure_reason
    assert Revision.objects.get(commit=newer_commit).state == Revision.State.UPLOADED
