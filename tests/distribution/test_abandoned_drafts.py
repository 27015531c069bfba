"""Drafts nobody finishes do not stay in the bucket for good: a daily job discards them, their copies and
their unfinished multipart uploads, once PUBLISH_DRAFT_DAYS have passed since they began; so are the Hub
client's uploads that old that no revision's file refers to."""

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from distribution import lfs
from distribution.models import LfsObject, Repo, Revision
from distribution.storage import get_storage
from distribution.tasks import discard_abandoned_publishes
from tests.support import servers
from tests.support.publishing import IN_PARTS, MIB, refused_draft
from verification.core.tiny_llama import write_tiny_llama
from workers.celery import app

pytestmark = pytest.mark.django_db


def test_the_job_is_on_the_daily_schedule():
    scheduled = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert scheduled["distribution.tasks.discard_abandoned_publishes"] == 24 * 3600


def test_a_draft_older_than_its_days_is_discarded_with_its_objects_and_unfinished_uploads(s3_endpoint, tmp_path):
    old = refused_draft(write_tiny_llama(tmp_path / "old"), "acme/forgotten", storage="s3")
    s3, bucket = servers.s3_client(s3_endpoint), s3_endpoint.bucket
    leftover = f"{old.storage_prefix}/model-00001-of-00002.safetensors"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=leftover)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=leftover, UploadId=upload, PartNumber=1, Body=b"x" * 5 * MIB)
    Revision.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(days=8))
    recent = refused_draft(write_tiny_llama(tmp_path / "recent", config_overrides=IN_PARTS), "acme/recent")

    assert discard_abandoned_publishes() == 1
    assert not Revision.objects.filter(pk=old.pk).exists()
    assert s3.list_objects_v2(Bucket=bucket, Prefix=old.storage_prefix).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=old.storage_prefix).get("Uploads", []) == []
    event = AuditEvent.objects.get(tag="distribution:draft:discarded")
    assert event.data["commit"] == old.commit and "not finished within 7 days" in event.data["reason"]
    recent.refresh_from_db()
    assert recent.state == Revision.State.DRAFT


def test_an_old_draft_a_run_is_finishing_now_is_left_to_it(tmp_path):
    draft = refused_draft(write_tiny_llama(tmp_path / "ckpt"), "acme/slow")
    old = timezone.now() - timezone.timedelta(days=8)
    Revision.objects.filter(pk=draft.pk).update(created_at=old, publish_heartbeat_at=timezone.now())
    assert discard_abandoned_publishes() == 0
    draft.refresh_from_db()
    assert draft.state == Revision.State.DRAFT


def test_hub_uploads_no_commit_named_in_time_are_deleted_with_their_unfinished_parts(s3_endpoint, settings):
    settings.STORAGE_BACKEND, settings.S3_MULTIPART_THRESHOLD = "s3", 5 * MIB
    repo = Repo.objects.create(org="acme", name="uploads")
    s3, bucket = servers.s3_client(s3_endpoint), s3_endpoint.bucket
    old = lfs.pending_object(repo, None, "a" * 64, 20 * MIB, get_storage("s3"), multipart=True)
    s3.upload_part(Bucket=bucket, Key=old.key, UploadId=old.upload_id, PartNumber=1, Body=b"x" * 5 * MIB)
    LfsObject.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(days=8))
    recent = lfs.pending_object(repo, None, "b" * 64, 10, get_storage("s3"), multipart=True)

    assert discard_abandoned_publishes() == 1
    assert list(LfsObject.objects.values_list("pk", flat=True)) == [recent.pk]
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=old.key).get("Uploads", []) == []
