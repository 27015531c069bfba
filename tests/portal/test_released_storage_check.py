"""The daily check of released files in storage (`portal.tasks.check_released_storage`): every file of every
released revision looked up where it lies (no byte read), staff mailed each one not held as verified, the
count on /metrics; storage out of reach fails the job and mails nobody. On SeaweedFS, versioning on where it
says so."""

import pytest
from django.core.cache import cache

from distribution.storage import StorageError
from portal.tasks import RELEASED_STORAGE_PROBLEMS_KEY, check_released_storage
from tests.support.metrics import scraped
from tests.support.personas import person
from tests.support.servers import VERSIONED_BUCKET, s3_client

pytestmark = pytest.mark.django_db
SHARD = "model-00001-of-00002.safetensors"
PROBLEMS = ("weightgate_released_storage_problems", ())


@pytest.fixture
def staff():
    cache.delete(RELEASED_STORAGE_PROBLEMS_KEY)
    return person("root", staff=True)


def test_a_key_written_over_is_mailed_to_staff_and_counted(
    versioned_s3_release, s3_endpoint, staff, client, mailoutbox
):
    revision, _checkpoint, _token = versioned_s3_release
    assert PROBLEMS not in scraped(client)  # nothing known before the first check
    assert check_released_storage.apply().get() is None and mailoutbox == []
    assert scraped(client)[PROBLEMS] == 0

    stored = revision.files.get(path=SHARD)
    s3_client(s3_endpoint).put_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, Body=b"other bytes")
    found = check_released_storage.apply().get()
    assert f"{SHARD} at {stored.storage_key} was written over or deleted after it was verified" in found
    assert [message.to for message in mailoutbox] == [[staff.email]]
    assert mailoutbox[0].subject == "[Weightgate] Released files are not in storage as verified"
    assert found in mailoutbox[0].body and "check_restore" in mailoutbox[0].body
    assert scraped(client)[PROBLEMS] == 1


def test_a_file_gone_from_a_bucket_without_versions_is_named(s3_release, s3_endpoint, staff, mailoutbox):
    revision, _checkpoint, _token = s3_release
    stored = revision.files.get(path=SHARD)
    s3_client(s3_endpoint).delete_object(Bucket=s3_endpoint.bucket, Key=stored.storage_key)
    found = check_released_storage.apply().get()
    assert f"{SHARD} is missing (at {stored.storage_key})" in found and len(mailoutbox) == 1


def test_storage_out_of_reach_fails_the_job_and_mails_nobody(s3_release, settings, staff, client, mailoutbox):
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing answers there
    cache.set(RELEASED_STORAGE_PROBLEMS_KEY, 0, timeout=None)
    with pytest.raises(StorageError, match="could not be checked"):
        check_released_storage.apply().get()
    assert mailoutbox == []
    assert scraped(client)[PROBLEMS] == 0  # the last check's count stands; the job's last success goes stale


def test_the_check_runs_daily():
    from workers.celery import app

    scheduled = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert scheduled["portal.tasks.check_released_storage"] == 24 * 3600
