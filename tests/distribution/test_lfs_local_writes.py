"""Uploads by LFS into local storage, where the portal writes each part itself: once an object is accepted
(hashed whole and found to be its oid) no byte may be written into it, since a commit's file refers to those
very bytes in place and verification, signature and links all rest on them.

The attack, done for real against the live portal: a publisher sends every part, then opens one more PUT
of part 1 and holds its body back, completes the upload (accepted), and only then sends other bytes. The
writer had opened the staged file before acceptance renamed it into place, so those bytes landed in the
accepted object, same size, after its hash was taken."""

import hashlib
import io
import os
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from access.models import Publisher
from distribution import lfs
from distribution.models import LfsObject, Repo
from tests.support import servers
from tests.support.flows import http
from tests.support.publishing import lfs_upload_actions

pytestmark = pytest.mark.django_db(transaction=True)
MIB = 1024 * 1024


def put(url: str, data: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.headers.get("ETag", "")


def held_put(url: str, length: int) -> socket.socket:
    """A PUT whose headers are sent, its body not yet."""
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {length}\r\n"
    connection.sendall((head + "Connection: close\r\n\r\n").encode())
    return connection


def answer_of(connection: socket.socket) -> tuple[int, str]:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), headers.get("X-Error-Message", "")


def wait_until_open(path: Path, timeout: float = 10) -> None:
    """Until a thread of this process (the live server's) holds `path` open: the held PUT's writer."""
    deadline, wanted = time.monotonic() + timeout, os.path.realpath(path)
    while time.monotonic() < deadline:
        for entry in os.scandir("/proc/self/fd"):
            try:
                if os.readlink(entry.path) == wanted:
                    return
            except OSError:
                continue
        time.sleep(0.02)
    raise TimeoutError(f"nothing opened {path}")


def test_a_part_held_open_across_acceptance_writes_nothing_into_the_accepted_object(live_server, paula, settings):
    settings.STORAGE_BACKEND = "local"
    settings.S3_MULTIPART_THRESHOLD = MIB  # parts of 1 MiB
    repo = Repo.objects.create(org="acme", name="tiny")
    Publisher.objects.create(user=Publisher.objects.get(repo__name="first").user, repo=repo)
    data = os.urandom(2 * MIB + 4096)  # three parts, the last one short
    oid = hashlib.sha256(data).hexdigest()
    upload = lfs_upload_actions(live_server.url, paula, "acme/tiny", oid, len(data), "multipart")["upload"]
    assert int(upload["header"]["chunk_size"]) == MIB
    etags = [put(upload["header"][str(number)], data[(number - 1) * MIB : number * MIB])[1] for number in (1, 2, 3)]
    obj = LfsObject.objects.get(oid=oid)
    incoming = Path(settings.LOCAL_STORAGE_ROOT, f"{obj.key}.incoming")

    held = held_put(upload["header"]["1"], MIB)
    try:
        wait_until_open(incoming)
        parts = [{"partNumber": number, "etag": etag.strip('"')} for number, etag in enumerate(etags, start=1)]
        status, headers, _ = http("POST", upload["href"], body={"oid": oid, "parts": parts})
        assert status == 200, headers.get("X-Error-Message")
        obj.refresh_from_db()
        assert obj.state == LfsObject.State.ACCEPTED
        held.sendall(b"\x00" * MIB)  # other bytes for part 1, after the object was accepted
        status, message = answer_of(held)
    finally:
        held.close()

    accepted = Path(settings.LOCAL_STORAGE_ROOT, obj.key)
    assert hashlib.sha256(accepted.read_bytes()).hexdigest() == oid  # the accepted bytes, unchanged
    assert status == 409 and "accepted" in message, (status, message)
    assert not incoming.exists()


def test_a_part_begun_after_acceptance_moved_the_object_writes_no_file_and_is_refused(live_server, paula, settings):
    """The narrower window: a part's request read the object as still pending, and acceptance moved it on
    before the part's writer opened the staged file. Before, the writer made a new file there and answered
    200 for bytes that went nowhere, leaving that file behind for good; the staged file is now made when
    the upload is announced, so a writer finds nothing to write into and the part is refused."""
    settings.STORAGE_BACKEND = "local"
    data = os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    upload = lfs_upload_actions(live_server.url, paula, "acme/first", oid, len(data), "basic")["upload"]
    read_by_the_part = LfsObject.objects.get(oid=oid)  # still pending, as the late part's request found it
    incoming = Path(settings.LOCAL_STORAGE_ROOT, lfs.incoming_key(read_by_the_part))
    assert incoming.is_file() and incoming.stat().st_size == 0  # staged at the announcement
    assert put(upload["href"], data)[0] == 200  # the whole object: accepted, moved into place
    assert LfsObject.objects.get(oid=oid).state == LfsObject.State.ACCEPTED

    with pytest.raises(lfs.Refused) as refused:
        lfs.write_local(read_by_the_part, io.BytesIO(b"\x00" * len(data)), len(data))
    assert refused.value.status == 409 and "none of them were written" in refused.value.message
    assert not incoming.exists()
    accepted = Path(settings.LOCAL_STORAGE_ROOT, read_by_the_part.key)
    assert hashlib.sha256(accepted.read_bytes()).hexdigest() == oid


def test_verify_before_any_byte_was_sent_says_nothing_was_uploaded_and_keeps_the_upload(live_server, paula, settings):
    settings.STORAGE_BACKEND = "local"
    data = os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    actions = lfs_upload_actions(live_server.url, paula, "acme/first", oid, len(data), "basic")
    status, headers, _ = http("POST", actions["verify"]["href"], token=paula, body={"oid": oid, "size": len(data)})
    assert status == 404 and "nothing was uploaded" in headers.get("X-Error-Message", ""), status
    assert LfsObject.objects.get(oid=oid).state == LfsObject.State.PENDING
    assert put(actions["upload"]["href"], data)[0] == 200  # the upload goes on as announced
    assert LfsObject.objects.get(oid=oid).state == LfsObject.State.ACCEPTED


def test_an_upload_announced_while_s3_is_out_of_reach_is_refused_with_a_503_and_starts_nothing(
    live_server, paula, settings, s3_endpoint
):
    settings.STORAGE_BACKEND = "s3"
    settings.S3_MULTIPART_THRESHOLD = 5 * MIB
    settings.S3_ENDPOINT_URL = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    status, headers, _ = http(
        "POST",
        f"{live_server.url}/acme/first.git/info/lfs/objects/batch",
        token=paula,
        body={"operation": "upload", "transfers": ["multipart"], "objects": [{"oid": "a" * 64, "size": 6 * MIB}]},
    )
    assert status == 503 and "storage cannot take uploads now" in headers.get("X-Error-Message", ""), status
    assert not LfsObject.objects.exists()
