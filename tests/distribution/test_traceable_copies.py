"""Traceable repos: each grantee downloads a copy of their own, by every channel, and the same copy
every time; files without carriers and repos not traceable are served as published."""

import hashlib
import json
import tempfile
import threading
from pathlib import Path

import pytest
from django.db import connection
from huggingface_hub import HfApi, snapshot_download

from access.services import grant_access
from audit.models import AuditEvent
from audit.tags import Tag
from distribution import copies
from distribution.models import TracedCopy, TracedRevision
from portal.restore import released_objects
from tests.support.flows import http, published_traceable
from tests.support.personas import person, token_for
from tests.support.publishing import s3_operations
from tests.support.servers import s3_client
from verification.core.signature import SIGNATURE_PATH

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/traced"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(live_server, token, folder: Path) -> Path:
    return Path(snapshot_download(REPO, endpoint=live_server.url, token=token, local_dir=folder))


def test_the_served_layout_is_verified_and_recorded_before_release(traced):
    revision, _checkpoint, _ = traced
    layout = TracedRevision.objects.get(revision=revision)
    assert layout.carriers and set(layout.carriers) <= set(layout.files)
    assert all(entry["prefix_size"] < entry["size"] for entry in layout.files.values())
    run = revision.runs.first()
    assert run.checks.filter(name="served", code="ServedLayoutVerified", status="pass").exists()


def test_two_people_get_different_bytes_and_one_person_the_same_bytes_every_time(live_server, traced, tmp_path):
    revision, checkpoint, people = traced
    alice = download(live_server, people["alice"], tmp_path / "alice")
    again = download(live_server, people["alice"], tmp_path / "alice-again")
    bob = download(live_server, people["bob"], tmp_path / "bob")
    layout = TracedRevision.objects.get(revision=revision)
    for path in layout.files:
        assert sha256(alice / path) == sha256(again / path)
        assert sha256(alice / path) != sha256(bob / path)
        assert sha256(alice / path) != sha256(checkpoint / path)
        assert (alice / path).stat().st_size == layout.files[path]["size"]  # the header is written again
    for path in ("config.json", "model.safetensors.index.json"):
        assert sha256(alice / path) == sha256(bob / path) == sha256(checkpoint / path)
    copies = TracedCopy.objects.filter(revision=revision)
    assert copies.count() == 2
    alice_copy = copies.get(username="alice")
    assert all(alice_copy.files[path]["sha256"] == sha256(alice / path) for path in layout.files)
    assert sha256(alice / SIGNATURE_PATH) == alice_copy.files[SIGNATURE_PATH]["sha256"]
    assert AuditEvent.objects.filter(tag=Tag.COPY_ISSUED).count() == 2


def test_head_names_the_recipients_digest_and_size(live_server, traced):
    revision, _, people = traced
    path = next(iter(TracedRevision.objects.get(revision=revision).files))
    url = f"{live_server.url}/{REPO}/resolve/{revision.commit}/{path}"
    status, headers, _ = http("HEAD", url, token=people["alice"])
    assert status == 200
    issued = TracedCopy.objects.get(revision=revision, username="alice").files[path]
    assert headers["X-Linked-Etag"] == f'"{issued["sha256"]}"' == headers["ETag"]
    assert headers["X-Linked-Size"] == str(issued["size"]) == headers["Content-Length"]
    _, bob_headers, _ = http("HEAD", url, token=people["bob"])
    assert bob_headers["X-Linked-Etag"] != headers["X-Linked-Etag"]


def test_ranges_and_resumes_of_a_copy_are_slices_of_the_whole(live_server, traced):
    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    path, entry = next(iter(layout.files.items()))
    url = f"{live_server.url}/{REPO}/resolve/{revision.commit}/{path}"
    status, headers, whole = http("GET", url, token=people["alice"])
    if status == 302:
        status, headers, whole = http("GET", live_server.url + headers["Location"])
    assert status == 200 and len(whole) == entry["size"]
    ticket = None
    _, redirect, _ = http("GET", url, token=people["alice"])
    ticket = live_server.url + redirect["Location"]
    prefix = entry["prefix_size"]
    etag = f'"{hashlib.sha256(whole).hexdigest()}"'
    for first, last in [(0, 99), (prefix - 10, prefix + 9), (prefix + 5, entry["size"] - 1), (100, prefix - 1)]:
        status, headers, part = http("GET", ticket, headers={"Range": f"bytes={first}-{last}", "If-Range": etag})
        assert status == 206, (first, last)
        assert part == whole[first : last + 1]
        assert headers["Content-Range"] == f"bytes {first}-{last}/{len(whole)}"
    status, _, part = http("GET", ticket, headers={"Range": "bytes=-50"})
    assert status == 206 and part == whole[-50:]
    status, _, stale = http("GET", ticket, headers={"Range": "bytes=0-9", "If-Range": '"' + "0" * 64 + '"'})
    assert status == 200 and stale == whole


def test_the_tree_manifest_and_sha256sums_list_the_recipients_digests(live_server, traced):
    revision, _, people = traced
    status, _, body = http("GET", f"{live_server.url}/api/models/{REPO}/tree/main", token=people["alice"])
    assert status == 200
    listed = {entry["path"]: entry for entry in json.loads(body)}
    issued = TracedCopy.objects.get(revision=revision, username="alice").files
    for path, entry in issued.items():
        assert listed[path]["lfs"]["oid"] == entry["sha256"] and listed[path]["size"] == entry["size"]
    status, _, sums = http(
        "GET", f"{live_server.url}/api/v1/repos/{REPO}/revisions/main/SHA256SUMS", token=people["alice"]
    )
    assert status == 200, sums
    listed_sums = dict(line.split("  ")[::-1] for line in sums.decode().splitlines())
    assert listed_sums == {path: entry["sha256"] for path, entry in issued.items()}


def test_concurrent_first_downloads_make_one_copy(live_server, traced):
    revision, _, people = traced
    path = next(iter(TracedRevision.objects.get(revision=revision).files))
    url = f"{live_server.url}/{REPO}/resolve/{revision.commit}/{path}"
    answers = []

    def head():
        answers.append(http("HEAD", url, token=people["carol"])[1]["X-Linked-Etag"])
        connection.close()

    threads = [threading.Thread(target=head) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(answers)) == 1 and len(answers) == 6
    assert TracedCopy.objects.filter(revision=revision, username="carol").count() == 1


def test_on_s3_each_copy_is_streamed_through_the_portal_with_ranges_and_leaves_no_temporary_file(
    live_server, settings, s3_endpoint, tmp_path, monkeypatch
):
    settings.TRACE_CARRIER_PERMILLE = 1000
    revision, _ = published_traceable(tmp_path, "acme/traced-s3", "s3")
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where this process's temporary files go
    copies._served.clear()  # the served bases are read from S3 by this test's downloads
    folder = Path(snapshot_download("acme/traced-s3", endpoint=live_server.url, token=token, local_dir=tmp_path / "a"))
    issued = TracedCopy.objects.get(revision=revision, username="alice").files
    for path, entry in issued.items():
        assert sha256(folder / path) == entry["sha256"], path
    path = next(iter(TracedRevision.objects.get(revision=revision).files))
    url = f"{live_server.url}/acme/traced-s3/resolve/main/{path}"
    whole = (folder / path).read_bytes()
    copies._served.clear()  # a process that has not read this base yet: it looks the base up by its key
    with s3_operations() as asked:
        status, _, part = http("GET", url, token=token, headers={"Range": "bytes=100-"})
    assert status == 206 and part == whole[100:]
    assert "HeadObject" in asked and "ListObjectsV2" not in asked, asked  # was: a listing of the base's folder
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize("process", ["that served it before", "new"])
def test_on_s3_a_served_base_written_over_is_refused_not_streamed_into_copies(
    live_server, settings, s3_endpoint, tmp_path, process
):
    """The attack: someone with write access to the bucket changes a byte of a served base's shared prefix
    (same size, same tail). Only tails are hashed when a copy is made, so the changed prefix would go out in
    every copy under the digest announced for it; the portal refuses instead, saying what the operators
    must do, in a process that had the base open and in a new one."""
    settings.TRACE_CARRIER_PERMILLE = 1000
    revision, _ = published_traceable(tmp_path, "acme/traced-s3", "s3")
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    traced = TracedRevision.objects.get(revision=revision)
    path = next(iter(traced.files))
    url = f"{live_server.url}/acme/traced-s3/resolve/main/{path}"
    copies._served.clear()
    status, _, first = http("GET", url, token=token)
    assert status == 200

    bucket, key = s3_client(s3_endpoint), traced.storage_key(path)
    base = bytearray(bucket.get_object(Bucket=s3_endpoint.bucket, Key=key)["Body"].read())
    base[traced.files[path]["prefix_size"] - 1] ^= 0x01  # the prefix's last byte
    bucket.put_object(Bucket=s3_endpoint.bucket, Key=key, Body=bytes(base))
    if process == "new":
        copies._served.clear()
    status, _, body = http("GET", url, token=token)
    assert status == 503, f"{status}: {'the same bytes' if body == first else 'other bytes'} went out"
    assert b"prepare_traceable acme/traced-s3" in body
    # The restore check and the daily check of released files name it too, with what to run.
    found = [finding.text for finding in released_objects() if not finding.ok]
    assert len(found) == 1 and f"the served base of {path} ({key}) is gone or was written over" in found[0]
    assert f"prepare_traceable acme/traced-s3 --revision {revision.commit}" in found[0]


def test_paths_info_and_files_metadata_give_each_recipient_their_own_digests(live_server, traced):
    revision, _, people = traced
    hub = HfApi(endpoint=live_server.url)
    for name in ("alice", "bob"):
        infos = hub.get_paths_info(REPO, list(revision.files.values_list("path", flat=True)), token=people[name])
        issued = TracedCopy.objects.get(revision=revision, username=name).files
        listed = {info.path: info for info in infos}
        for path, entry in issued.items():
            assert listed[path].lfs.sha256 == entry["sha256"] and listed[path].size == entry["size"]
        siblings = {s.rfilename: s for s in hub.model_info(REPO, files_metadata=True, token=people[name]).siblings}
        assert all(siblings[path].lfs.sha256 == entry["sha256"] for path, entry in issued.items())
    alice, bob = (TracedCopy.objects.get(revision=revision, username=n).files for n in ("alice", "bob"))
    assert any(alice[path]["sha256"] != bob[path]["sha256"] for path in alice)


def test_a_process_keeps_no_more_served_bases_than_its_memory_allows_and_still_serves_each_copy(
    live_server, traced, tmp_path, monkeypatch
):
    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    assert len(layout.files) >= 2, "the test needs two carrier-holding shards"
    copies._served.clear()
    largest = max(2 * (entry["size"] - entry["prefix_size"]) for entry in layout.files.values())
    monkeypatch.setattr(copies._served, "capacity", largest)  # room for one base at a time
    first = download(live_server, people["alice"], tmp_path / "alice")
    assert len(copies._served) == 1  # every file was opened, one is held
    copies.recent_tails.clear()  # made again from the bases, opened again, not from tails kept
    again = download(live_server, people["alice"], tmp_path / "again")
    issued = TracedCopy.objects.get(revision=revision, username="alice").files
    for path in layout.files:
        assert sha256(first / path) == sha256(again / path) == issued[path]["sha256"]
    assert len(copies._served) == 1


def test_behind_nginx_on_its_unix_socket_the_shared_prefix_goes_out_by_sendfile_and_the_tail_after(client, traced):
    """As gunicorn hands over its socket (environ["gunicorn.socket"]), a Unix one as the shipped site uses."""
    import socket

    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    path = max(layout.files, key=lambda p: layout.files[p]["size"])
    resolved = client.get(f"/{REPO}/resolve/main/{path}", HTTP_AUTHORIZATION=f"Bearer {people['alice']}")
    assert resolved.status_code == 302
    served, nginx = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received = bytearray()

    def read_as_nginx() -> None:
        while piece := nginx.recv(1 << 20):
            received.extend(piece)

    reader = threading.Thread(target=read_as_nginx)
    reader.start()
    try:
        response = client.get(resolved["Location"], **{"gunicorn.socket": served})
        relayed = b"".join(response.streaming_content)
    finally:
        served.close()
        reader.join(timeout=30)
        nginx.close()
    prefix_size = layout.files[path]["prefix_size"]
    # The kernel sent the prefix from the base file; only the recipient's tail went through the response.
    assert len(received) == prefix_size and len(relayed) == layout.files[path]["size"] - prefix_size
    alice = TracedCopy.objects.get(revision=revision, username="alice")
    assert hashlib.sha256(bytes(received) + relayed).hexdigest() == alice.files[path]["sha256"]


def test_a_process_issues_and_serves_copies_without_reading_a_prefix_to_hash_it(
    live_server, traced, tmp_path, monkeypatch, fresh_process_state
):
    """The prefix's hash state recorded when the served layout was prepared is taken up again: a web process
    reads only tails to issue a copy, whatever the size of the files. A layout prepared before states were
    recorded still gives copies, hashing its prefixes once in each process."""
    from tracing.served import ServedFile

    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    assert all(entry["prefix_state"]["length"] == entry["prefix_size"] for entry in layout.files.values())

    def no_prefix_read(self):
        raise AssertionError(f"{self.path}: its prefix was read to hash it")

    monkeypatch.setattr(ServedFile, "prefix_pieces", no_prefix_read)
    alice = download(live_server, people["alice"], tmp_path / "alice")
    issued = TracedCopy.objects.get(revision=revision, username="alice")
    assert all(issued.files[path]["sha256"] == sha256(alice / path) for path in layout.files)

    monkeypatch.undo()
    for entry in layout.files.values():
        del entry["prefix_state"]
    layout.save(update_fields=["files"])
    copies._served.clear()
    bob = download(live_server, people["bob"], tmp_path / "bob")
    issued = TracedCopy.objects.get(revision=revision, username="bob")
    assert all(issued.files[path]["sha256"] == sha256(bob / path) for path in layout.files)
