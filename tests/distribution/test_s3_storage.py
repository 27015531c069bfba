"""S3 storage on a real endpoint (SeaweedFS, which enforces SigV4 signatures and link expiry):
bytes go from S3 to the client by presigned redirect, and only a valid, live link works."""

import hashlib
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from django.test import override_settings

from distribution.models import DownloadEvent, Repo, Revision
from distribution.publishing import PublishError, publish_checkpoint
from distribution.storage import get_storage
from tests.support.metrics import scraped
from tests.support.servers import VERSIONED_BUCKET, s3_client
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db
SHARD = "model-00001-of-00002.safetensors"


def curl(url: str, *args: str, output=None) -> tuple[int, str]:
    """(HTTP status, response headers) from the real curl."""
    command = ["curl", "-sS", "-D", "-", "-o", str(output or os.devnull), "-w", "%{http_code}", *args, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return int(result.stdout[-3:]), result.stdout[:-3]


def test_the_portal_redirects_to_a_presigned_url_that_curl_downloads_and_resumes(client, s3_release, tmp_path):
    _revision, checkpoint, token = s3_release
    response = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 302
    url = response["Location"]
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=" in url
    expected = (checkpoint / SHARD).read_bytes()

    status, headers = curl(url, output=tmp_path / "whole")
    assert status == 200
    assert f'attachment; filename="{SHARD}"' in headers
    assert (tmp_path / "whole").read_bytes() == expected

    partial = tmp_path / "partial"
    partial.write_bytes(expected[:1000])
    status, _ = curl(url, "-r", "1000-", output=tmp_path / "rest")
    assert status == 206
    assert partial.read_bytes() + (tmp_path / "rest").read_bytes() == expected

    event = DownloadEvent.objects.get()
    assert (event.channel, event.status, event.path, event.username) == ("s3-redirect", 302, SHARD, "alice")
    assert event.bytes_served is None  # the bytes never passed through the portal


@pytest.mark.parametrize("tampering", ["replaced, same size", "deleted"])
def test_a_file_changed_in_the_bucket_after_verification_gets_no_link(client, s3_release, s3_endpoint, tampering):
    """Someone with write access to the bucket swaps a released shard: a presigned link would hand the new
    bytes to every recipient unseen (S3 serves whatever is at the key), so the portal answers 503 instead,
    for the first request and for repeats answered by the fast path alike, and records no download."""
    from distribution.downloads.channels import presigned_links

    revision, checkpoint, token = s3_release
    stored = revision.files.get(path=SHARD)
    url, auth = f"/acme/tiny/resolve/main/{SHARD}", {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get(url, **auth).status_code == 302  # a repeat may now be answered by the fast path

    bucket = s3_client(s3_endpoint)
    if tampering == "deleted":
        bucket.delete_object(Bucket=s3_endpoint.bucket, Key=stored.storage_key)
    else:
        original = (checkpoint / SHARD).read_bytes()
        tampered = original[:-4] + bytes(b ^ 0xFF for b in original[-4:])
        bucket.put_object(Bucket=s3_endpoint.bucket, Key=stored.storage_key, Body=tampered)
    presigned_links.clear()  # the link made before lived out the half of its life it is reused for
    events = DownloadEvent.objects.count()

    for _ in range(2):
        response = client.get(url, **auth)
        assert response.status_code == 503
        assert "Location" not in response
        assert "no longer in storage as it was verified" in response.json()["error"]
    assert DownloadEvent.objects.count() == events


def test_seaweedfs_refuses_expired_tampered_and_unsigned_links(s3_release, tmp_path):
    revision, _checkpoint, _ = s3_release
    storage = get_storage("s3")
    stored = revision.files.get(path=SHARD)
    url = storage.presigned_get(stored.storage_key, filename=SHARD, expires_in=60)
    assert curl(url)[0] == 200

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert curl(urlunsplit(parts._replace(query=urlencode(query))))[0] == 403
    other_key = parts.path.replace(SHARD, "config.json")
    assert curl(urlunsplit(parts._replace(path=other_key)))[0] == 403
    assert curl(urlunsplit(parts._replace(query="")))[0] == 403

    short = storage.presigned_get(stored.storage_key, filename=SHARD, expires_in=1)
    time.sleep(2.5)
    assert curl(short)[0] == 403


def test_a_wrong_secret_key_is_refused_by_the_endpoint(s3_endpoint):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as raised:
        s3_client(s3_endpoint, secret_key="not-the-secret").list_objects_v2(Bucket=s3_endpoint.bucket)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@override_settings(S3_MULTIPART_THRESHOLD=5 * 1024 * 1024)
def test_large_files_go_up_in_parts_and_come_back_identical(s3_endpoint, tmp_path):
    storage = get_storage("s3")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * 1024 * 1024 + 17))
    storage.put_file("tests/multipart/big.bin", source)
    head = s3_client(s3_endpoint).head_object(Bucket=s3_endpoint.bucket, Key="tests/multipart/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # an S3 multipart ETag names its part count
    with storage.open("tests/multipart/big.bin") as back:
        assert back.read() == source.read_bytes()


def test_an_object_hashed_in_ranges_read_at_once_gives_its_digest_and_a_replaced_one_is_refused(
    s3_endpoint, monkeypatch
):
    from distribution import storage as storages
    from distribution.storage import ObjectChanged

    # Ranges of 64 KiB: more of them than are read ahead, so some are asked for after the object is replaced.
    monkeypatch.setattr(storages, "DIGEST_RANGE_BYTES", 64 * 1024)
    storage, key = get_storage("s3"), "tests/digest/big.bin"
    data = os.urandom(20 * storages.DIGEST_RANGE_BYTES + 5)  # whole ranges and a short last one
    storage.put_bytes(key, data)
    found = storage.stored_object(key)
    ranged = storage.digest(key, etag=found.etag, size=found.size)
    assert ranged == storage.digest(key, etag=found.etag)  # the same as one stream's
    assert (ranged.sha256, ranged.size, ranged.head) == (hashlib.sha256(data).hexdigest(), len(data), data[:512])

    reads = storage.ranges_ahead(key, found.size, found.etag)
    next(reads)
    storage.put_bytes(key, data[::-1])  # replaced while it is read: the next ranges are of another version
    with pytest.raises(ObjectChanged):
        list(reads)


@override_settings(S3_SECRET_ACCESS_KEY="not-the-secret")
def test_a_publish_the_endpoint_refuses_records_nothing(s3_endpoint, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "checkpoint")
    with pytest.raises(PublishError, match="nothing was published"):
        publish_checkpoint(checkpoint, "acme/unlucky", storage_backend="s3")
    assert not Repo.objects.exists()
    assert not Revision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_hub_client_keeps_the_copy_it_verified_and_is_told_why_it_gets_none_of_a_replaced_file(
    s3_release, s3_endpoint, live_server, tmp_path
):
    """The HEAD still answers the verified file's metadata (it hands out nothing): a Hub client that holds
    that file keeps using its copy without a GET, and one that does not is refused at its GET, at once (the
    client does not retry a GET's 503), with the portal's message as its error, and keeps no file. A 503 at
    the HEAD would be retried, then shown as 'check your connection', the message only in its cause."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    from distribution.downloads.channels import presigned_links

    revision, checkpoint, token = s3_release
    original = (checkpoint / SHARD).read_bytes()
    fetch = dict(repo_id="acme/tiny", filename=SHARD, endpoint=live_server.url, token=token)
    held = hf_hub_download(**fetch, cache_dir=tmp_path / "held")
    stored = revision.files.get(path=SHARD)
    tampered = original[:-4] + bytes(b ^ 0xFF for b in original[-4:])
    s3_client(s3_endpoint).put_object(Bucket=s3_endpoint.bucket, Key=stored.storage_key, Body=tampered)
    presigned_links.clear()
    events = DownloadEvent.objects.count()

    with pytest.raises(HfHubHTTPError) as refused:
        hf_hub_download(**fetch, cache_dir=tmp_path / "new")
    assert refused.value.response.status_code == 503
    assert "no longer in storage as it was verified" in str(refused.value)
    assert not any(path.is_file() for path in (tmp_path / "new").rglob(SHARD))
    assert hf_hub_download(**fetch, cache_dir=tmp_path / "held") == held
    assert Path(held).read_bytes() == original
    assert DownloadEvent.objects.count() == events


def tampered_copy(original: bytes) -> bytes:
    return original[:-4] + bytes(b ^ 0xFF for b in original[-4:])  # the same size, another ETag


def test_a_link_handed_out_before_a_versioned_key_is_written_over_still_fetches_the_verified_bytes(
    client, versioned_s3_release, s3_endpoint, tmp_path
):
    """The attack: a recipient is handed a link, then someone with write access to the bucket swaps the shard
    while the link lives (the portal reuses a link for half its life). A link to the key alone would fetch
    the new bytes; one naming the version checked fetches the verified ones, in a versioned bucket."""
    revision, checkpoint, token = versioned_s3_release
    stored = revision.files.get(path=SHARD)
    response = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 302
    link = response["Location"]

    original = (checkpoint / SHARD).read_bytes()
    bucket = s3_client(s3_endpoint)
    bucket.put_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, Body=tampered_copy(original))
    assert curl(link, output=tmp_path / "fetched")[0] == 200
    assert (tmp_path / "fetched").read_bytes() == original

    parts = urlsplit(link)
    assert "versionId" in dict(parse_qsl(parts.query))
    unpinned = urlencode([(name, value) for name, value in parse_qsl(parts.query) if name != "versionId"])
    unpinned = urlunsplit(parts._replace(query=unpinned))
    assert curl(unpinned)[0] == 403  # the version is signed with the rest: it cannot be dropped from a link


@pytest.mark.parametrize("tampering", ["written over", "deleted"])
def test_a_versioned_key_tampered_with_is_still_served_as_verified_until_no_version_of_it_is(
    client, versioned_s3_release, s3_endpoint, tmp_path, caplog, tampering
):
    """New links after the swap (or a deletion, which leaves a delete marker) name the earlier, verified
    version and tell the operators, who should restore it; only once that version is gone too does the
    portal refuse, as for an unversioned bucket."""
    from distribution.downloads.channels import presigned_links

    revision, checkpoint, token = versioned_s3_release
    stored = revision.files.get(path=SHARD)
    url, auth = f"/acme/tiny/resolve/main/{SHARD}", {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    bucket = s3_client(s3_endpoint)
    verified_version = bucket.head_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key)["VersionId"]
    original = (checkpoint / SHARD).read_bytes()
    if tampering == "deleted":
        bucket.delete_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key)
    else:
        bucket.put_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, Body=tampered_copy(original))
    # A key that merely begins with this one is another object, whatever it holds.
    bucket.put_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key + ".bak", Body=original)
    presigned_links.clear()

    mismatches = {outcome: mismatches_of(client, outcome) for outcome in ("verified_version", "refused")}
    response = client.get(url, **auth)
    assert response.status_code == 302
    assert dict(parse_qsl(urlsplit(response["Location"]).query))["versionId"] == verified_version
    assert curl(response["Location"], output=tmp_path / "fetched")[0] == 200
    assert (tmp_path / "fetched").read_bytes() == original
    assert f"{stored.storage_key} no longer holds {SHARD} as verified" in caplog.text
    assert mismatches_of(client, "verified_version") == mismatches["verified_version"] + 1  # what to alert on

    bucket.delete_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, VersionId=verified_version)
    presigned_links.clear()
    events = DownloadEvent.objects.count()
    response = client.get(url, **auth)
    assert response.status_code == 503
    assert "no longer in storage as it was verified" in response.json()["error"]
    assert DownloadEvent.objects.count() == events
    assert mismatches_of(client, "refused") == mismatches["refused"] + 1


def mismatches_of(client, outcome: str) -> float:
    labels = (("outcome", outcome), ("repo", "acme/tiny"))
    return scraped(client).get(("weightgate_stored_file_mismatches_total", labels), 0)


def test_verification_records_the_version_it_read_and_links_name_it_not_whatever_has_the_same_etag(
    client, versioned_s3_release, s3_endpoint, caplog
):
    """The links rest on the VersionId that verification read, not on the ETag (an MD5 that a publisher can
    make two files share): the same bytes put again, a new version with the verified ETag, are not what the
    link names. A bucket restored by copying (every VersionId new) still serves what has the verified ETag."""
    from distribution.downloads.channels import presigned_links

    revision, checkpoint, token = versioned_s3_release
    bucket = s3_client(s3_endpoint)
    checked = dict(revision.file_checks.values_list("path", "version_id"))
    # model.sig too, though written after the checks: the version the worker stored is recorded as it is put.
    checked["model.sig"] = bucket.head_object(Bucket=VERSIONED_BUCKET, Key=f"{revision.storage_prefix}/model.sig")[
        "VersionId"
    ]
    for row in revision.files.all():
        head = bucket.head_object(Bucket=VERSIONED_BUCKET, Key=row.storage_key)
        assert row.stored_version == checked[row.path] == head["VersionId"] != ""

    stored = revision.files.get(path=SHARD)
    original = (checkpoint / SHARD).read_bytes()
    again = bucket.put_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, Body=original)
    assert again["ETag"].strip('"') == stored.stored_etag and again["VersionId"] != stored.stored_version
    url, auth = f"/acme/tiny/resolve/main/{SHARD}", {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    presigned_links.clear()
    linked = dict(parse_qsl(urlsplit(client.get(url, **auth)["Location"]).query))
    assert linked["versionId"] == stored.stored_version
    assert f"{stored.storage_key} no longer holds {SHARD} as verified" in caplog.text

    bucket.delete_object(Bucket=VERSIONED_BUCKET, Key=stored.storage_key, VersionId=stored.stored_version)
    presigned_links.clear()
    linked = dict(parse_qsl(urlsplit(client.get(url, **auth)["Location"]).query))
    assert linked["versionId"] == again["VersionId"]


def test_a_bucket_without_versions_records_none(s3_release):
    revision, _checkpoint, _token = s3_release
    assert set(revision.files.values_list("stored_version", flat=True)) == {""}
    assert set(revision.file_checks.values_list("version_id", flat=True)) == {""}
