"""Resuming a publish: a rerun after an interruption sends only what storage lacks, into the same draft, and
the revision goes to verification only once every file is there."""

import io
import json
import os
import signal
import subprocess
import time

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from access.services import grant_access
from audit.models import AuditEvent
from distribution.models import Revision
from distribution.publishing import PublishError, held, publish_checkpoint
from distribution.storage import get_storage
from tests.support import servers
from tests.support.flows import http, wait_for_verdict
from tests.support.personas import person, token_for
from tests.support.publishing import IN_PARTS, MIB, publish_command, refused_draft, run_publish
from verification.core.signature import SIGNATURE_PATH
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db(transaction=True)


def stored_now(client, bucket: str, prefix: str) -> dict[str, tuple]:
    """key -> (size, ETag, time written) of every object under prefix."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: (item["Size"], item["ETag"], item["LastModified"]) for item in listed}


def held_parts(client, bucket: str, prefix: str) -> dict[str, int]:
    """key -> bytes in the parts of its unfinished multipart upload."""
    held = {}
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])
        held[upload["Key"]] = sum(part["Size"] for part in parts)
    return held


def test_a_publish_killed_halfway_resumes_sending_only_what_is_missing_then_verifies_and_serves(
    worker, worker_env, s3_endpoint, client, tmp_path
):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides=IN_PARTS)
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir()}
    env = {
        **worker_env,
        "S3_MULTIPART_THRESHOLD": str(5 * MIB),
        "PUBLISH_CONCURRENCY": "1",
        "PUBLISH_STALE_SECONDS": "2",
    }
    s3, bucket, prefix = servers.s3_client(s3_endpoint), s3_endpoint.bucket, "repos/acme/resumed/"

    first = subprocess.Popen(
        publish_command(checkpoint, "acme/resumed", "--storage", "s3"),
        cwd=servers.REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    # A real interruption: SIGKILL while some file is half-way, a part of it sent and the rest not.
    servers.wait_until(
        lambda: any(held_parts(s3, bucket, prefix).values()), timeout=60, interval=0.005, what="a part to be stored"
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    draft = Revision.objects.get(repo__name="resumed")
    assert draft.state == Revision.State.DRAFT, "the kill came too late to test anything"
    # A part or file whose bytes had all left when the kill came is still stored by the server a moment
    # later: judge what the first run left once the bucket stops changing.
    before, parts = settled(lambda: (stored_now(s3, bucket, prefix), held_parts(s3, bucket, prefix)))
    recorded = {row.path for row in draft.files.exclude(stored_etag="")}
    assert recorded and len(recorded) < len(sizes)

    # Judged with a minute's grace, the killed run's heartbeat is still fresh: nobody may take its draft yet.
    refused = run_publish(checkpoint, "acme/resumed", "--storage", "s3", env={**env, "PUBLISH_STALE_SECONDS": "60"})
    assert refused.returncode == 1 and "is being published by another run" in refused.stderr
    time.sleep(2.5)  # the killed run's heartbeat goes silent
    second = run_publish(checkpoint, "acme/resumed", "--storage", "s3", "--json", env=env)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)

    after = stored_now(s3, bucket, prefix)
    # The worker may already have verified the draft and written the portal's signature beside it.
    written = {key.rsplit("/", 1)[1] for key, listed in after.items() if before.get(key) != listed} - {SIGNATURE_PATH}
    assert written == set(sizes) - recorded  # only the files the first run had not finished
    resumed_bytes = sum(parts.values())
    assert result["revision"] == draft.commit and result["resumed"] is True
    assert result["uploaded"] == {"files": len(written), "bytes": sum(sizes[n] for n in written) - resumed_bytes}
    assert result["already_there"]["files"] == len(recorded)
    assert {f["path"] for f in result["files"] if f["status"] == "resumed"} == {
        key.rsplit("/", 1)[1] for key, held in parts.items() if held
    }
    assert held_parts(s3, bucket, prefix) == {}  # no multipart upload is left behind
    shards = [f"{prefix}{draft.commit}/{name}" for name in sorted(sizes) if "-of-" in name]
    assert [after[key][1].strip('"')[-2:] for key in shards] == ["-3", "-2", "-3"]  # each went up in parts

    revision = wait_for_verdict(draft, timeout=180)  # queued by the second run, verified by the worker
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    call_command("release", "acme/resumed", stdout=io.StringIO())
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    for name in sizes:
        response = client.get(f"/acme/resumed/resolve/main/{name}", HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
        assert response.status_code == 302
        status, _, body = http("GET", response["Location"])
        assert status == 200 and body == (checkpoint / name).read_bytes()


@override_settings(S3_MULTIPART_THRESHOLD=5 * MIB, PUBLISH_CONCURRENCY=4)
def test_large_files_go_up_in_parallel_parts(s3_endpoint, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides=IN_PARTS)
    publication = publish_checkpoint(checkpoint, "acme/parts", storage_backend="s3")
    s3 = servers.s3_client(s3_endpoint)
    for name in ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"):
        key = f"{publication.revision.storage_prefix}/{name}"
        head = s3.head_object(Bucket=s3_endpoint.bucket, Key=key)
        parts = -(-(checkpoint / name).stat().st_size // (5 * MIB))
        assert head["ETag"].strip('"').endswith(f"-{parts}")  # an S3 multipart ETag names its part count
        with get_storage("s3").open(key) as stored:
            assert stored.read() == (checkpoint / name).read_bytes()


@override_settings(S3_MULTIPART_THRESHOLD=6 * MIB)
def test_an_unfinished_upload_in_parts_of_another_size_is_aborted_and_the_file_sent_again(s3_endpoint, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=3, config_overrides=IN_PARTS)
    draft = refused_draft(checkpoint, "acme/resized", storage="s3")
    shard = draft.files.get(path="model-00001-of-00003.safetensors")
    s3, bucket = servers.s3_client(s3_endpoint), s3_endpoint.bucket
    s3.delete_object(Bucket=bucket, Key=shard.storage_key)
    leftover = s3.create_multipart_upload(Bucket=bucket, Key=shard.storage_key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=shard.storage_key, UploadId=leftover, PartNumber=1, Body=b"x" * 5 * MIB)

    publication = publish_checkpoint(checkpoint, "acme/resized", storage_backend="s3")
    sent = {outcome.path: (outcome.status, outcome.sent) for outcome in publication.files if outcome.sent}
    assert sent == {shard.path: ("uploaded", shard.size)}
    assert held_parts(s3, bucket, "repos/acme/resized/") == {}
    assert s3.head_object(Bucket=bucket, Key=shard.storage_key)["ETag"].strip('"').endswith("-3")


def test_a_local_rerun_copies_only_the_files_storage_lacks(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    draft = refused_draft(checkpoint, "acme/local")
    root = get_storage("local").path(draft.storage_prefix)
    (root / "model-00001-of-00002.safetensors").unlink()
    (root / "config.json.partial").write_bytes(b"half a copy a killed run left")

    publication = publish_checkpoint(checkpoint, "acme/local")
    assert [(o.path, o.status) for o in publication.files if o.status != "already there"] == [
        ("model-00001-of-00002.safetensors", "uploaded")
    ]
    assert publication.revision.pk == draft.pk and publication.revision.state == Revision.State.UPLOADED
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in checkpoint.iterdir())
    recorded = AuditEvent.objects.filter(tag__startswith="distribution:").order_by("sequence")
    assert [event.tag for event in recorded] == [
        "distribution:draft:started", "distribution:draft:resumed", "distribution:revision:published"
    ]  # fmt: skip


def test_changed_files_start_a_new_draft_and_the_old_draft_of_that_directory_is_discarded(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    old = refused_draft(checkpoint, "acme/changed")
    write_tiny_llama(checkpoint, seed=1)  # the same names and sizes, other bytes: a new checkpoint

    publication = publish_checkpoint(checkpoint, "acme/changed")
    assert publication.revision.pk != old.pk and not publication.resumed
    assert all(outcome.status == "uploaded" for outcome in publication.files)
    assert not Revision.objects.filter(pk=old.pk).exists()
    assert not get_storage("local").path(old.storage_prefix).exists()
    discarded = AuditEvent.objects.get(tag="distribution:draft:discarded")
    assert discarded.data["commit"] == old.commit and "changed since it began" in discarded.data["reason"]


def test_a_draft_another_run_is_publishing_is_left_alone(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    draft = refused_draft(checkpoint, "acme/busy")
    Revision.objects.filter(pk=draft.pk).update(publish_heartbeat_at=timezone.now())
    with pytest.raises(PublishError, match="is being published by another run"):
        publish_checkpoint(checkpoint, "acme/busy")
    draft.refresh_from_db()
    assert draft.state == Revision.State.DRAFT and Revision.objects.count() == 1


def test_a_copy_that_fails_at_one_file_says_what_is_kept_and_the_rerun_sends_that_file_alone(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    draft = refused_draft(checkpoint, "acme/blocked")
    root = get_storage("local").path(draft.storage_prefix)
    (root / "config.json").unlink()
    (root / "config.json.partial").mkdir()  # the copy of config.json cannot be written there
    with pytest.raises(PublishError) as stopped:
        publish_checkpoint(checkpoint, "acme/blocked")
    assert f"Draft {draft.commit} of acme/blocked keeps the 4 of 5 files stored so far" in str(stopped.value)
    assert "run the same command again" in str(stopped.value)
    draft.refresh_from_db()
    assert draft.state == Revision.State.DRAFT and draft.publish_heartbeat_at is None

    (root / "config.json.partial").rmdir()
    publication = publish_checkpoint(checkpoint, "acme/blocked")
    assert [o.path for o in publication.files if o.sent] == ["config.json"]
    assert publication.revision.state == Revision.State.UPLOADED


def test_the_run_holding_a_draft_keeps_its_heartbeat_fresh_and_frees_it_when_it_stops(tmp_path):
    draft = refused_draft(write_tiny_llama(tmp_path / "ckpt"), "acme/alive")
    with override_settings(PUBLISH_STALE_SECONDS=2), held(draft):
        servers.wait_until(
            lambda: Revision.objects.filter(pk=draft.pk, publish_heartbeat_at__isnull=False).exists(),
            timeout=5,
            what="the heartbeat",
        )
    draft.refresh_from_db()
    assert draft.publish_heartbeat_at is None


def settled(look, quiet: float = 1.0, timeout: float = 30.0):
    """`look()` once it has given the same answer for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    seen, since = look(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = look()
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return seen
    raise TimeoutError(f"still changing after {timeout} s")
