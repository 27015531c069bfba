"""The deployment as shipped: Debian's nginx with deploy/nginx/weightgate.conf in front of gunicorn with
deploy/gunicorn.conf.py (X_ACCEL_REDIRECT_PREFIX=/protected/, TRUSTED_PROXIES=1, as the environment
template sets them), fetched through nginx by curl:

- a 1 GiB file of a released revision on local storage, read at 14 MiB/s, so for about 73 s: more than
  any default timeout of nginx or gunicorn (60 s, 30 s) that could cut a long download, and every byte
  arrives (its sha256 is the one the portal published);
- the same file interrupted after 3 s and resumed with `curl -C -` (a Range request from where it
  stopped), whole once joined;
- a file of a revision on S3 (SeaweedFS): a 302 to a presigned URL, which then downloads.

SLOW BY DESIGN: that test takes about 75 s of wall time, most of it the slow reader (the other two
run meanwhile); `-m "not slow"` leaves it out of a quick run, `make test` and CI run it. A second test
shows gunicorn alone (the portal sending the bytes) neither cutting a download that outlasts its
timeout nor dropping it when stopped.
"""

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.utils import timezone

from access.services import grant_access
from distribution.models import DownloadEvent, Repo, Revision, RevisionFile
from distribution.storage import get_storage
from tests.support import servers
from tests.support.deployment import behind_nginx
from tests.support.flows import SHARD, http
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
GIB = 1 << 30
BLOCK = 16 << 20
WRITE_OUT = "\n%{http_code} %{size_download} %{time_total}"  # appended to the body curl writes
RATE = 14 << 20  # bytes a second (about 15 MB/s): 1 GiB in about 73 s


@pytest.fixture
def front(worker_env, tmp_path):
    """(nginx's URL, gunicorn's), nginx in front of gunicorn as the environment template configures it."""
    with behind_nginx(
        worker_env, tmp_path, workers=2, X_ACCEL_REDIRECT_PREFIX="/protected/", TRUSTED_PROXIES="1"
    ) as urls:
        yield urls


def release_file(name: str, size: int) -> tuple[str, str, Path]:
    """acme/`name`, released on local storage with one file of `size` bytes, dana granted: (her token,
    the file's sha256, where it is stored).

    The rows a publish ends in, made directly: publishing and verifying 1 GiB would only add time.
    Each 16 MiB block starts with its own number, so a block sent twice or out of order changes the hash."""
    repo = Repo.objects.create(org="acme", name=name)
    revision = Revision.objects.create(
        repo=repo, commit="e" * 40, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    stored = RevisionFile(revision=revision, path="weights.bin", size=size, sha256="")
    path = get_storage("local").path(stored.storage_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, noise = hashlib.sha256(), bytearray(os.urandom(BLOCK))
    with path.open("wb") as out:
        for number in range(size // BLOCK):
            noise[:8] = number.to_bytes(8, "big")
            digest.update(noise)
            out.write(noise)
    stored.sha256 = digest.hexdigest()
    stored.save()
    dana = person("dana")
    grant_access(dana, repo, granted_by=None)
    return token_for(dana), stored.sha256, path


@pytest.fixture
def gigabyte_release():
    """acme/huge with its 1 GiB file: (dana's token, its sha256); the file is removed afterwards."""
    token, sha256, path = release_file("huge", GIB)
    yield token, sha256
    path.unlink(missing_ok=True)


def curl(*arguments: str, token: str, output: str = "-", follow: bool = True) -> subprocess.Popen:
    """curl with the bearer token, following redirects unless told not to (it keeps the token on this
    host and drops it on any other, as an S3 link needs)."""
    command = ["curl", "-sS", *(["-L"] if follow else []), "-H", f"Authorization: Bearer {token}", "-o", output]
    return subprocess.Popen([*command, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def hashed(process: subprocess.Popen, into: dict) -> None:
    """Read the body curl writes to stdout (with `-w` appended) as it comes, hashing all but the tail."""
    digest, tail = hashlib.sha256(), b""
    while chunk := process.stdout.read(1 << 20):
        data = tail + chunk
        digest.update(data[:-64])
        tail = data[-64:]
    body_end, _, written = tail.rpartition(b"\n")
    digest.update(body_end)
    into.update(sha256=digest.hexdigest(), written=written.decode())


@pytest.mark.slow
def test_the_shipped_nginx_and_gunicorn_serve_a_slow_gigabyte_a_resumed_range_and_an_s3_redirect(
    front, gigabyte_release, s3_release, s3_endpoint, tmp_path
):
    (front, portal), (token, expected) = front, gigabyte_release
    url = f"{front}/acme/huge/resolve/main/weights.bin"
    # The portal only decides: asked directly (not through nginx) for the ticket its redirect names, it
    # answers with no byte of the file, only the header that tells nginx which file to send.
    pinned = f"{front}/acme/huge/resolve/{'e' * 40}/weights.bin"
    ticket = curl("-w", "%{redirect_url}", pinned, token=token, output="/dev/null", follow=False)
    ticket_url = ticket.communicate(timeout=60)[0].decode().replace(front, portal)
    status, headers, body = http("GET", ticket_url)
    assert (status, body) == (200, b"")
    assert headers["X-Accel-Redirect"] == f"/protected/{stored_key(expected)}"
    started = time.monotonic()
    slow = curl("--limit-rate", str(RATE), "-w", WRITE_OUT, url, token=token)
    slow_result = {}
    reader = threading.Thread(target=hashed, args=(slow, slow_result))
    reader.start()

    # Meanwhile: a download cut off after 3 s, then resumed from where it stopped.
    partial = tmp_path / "weights.bin"
    cut = curl("--limit-rate", str(50 << 20), "--max-time", "3", url, token=token, output=str(partial))
    assert cut.wait(timeout=60) == 28  # curl's "operation timed out"
    cut_at = partial.stat().st_size
    assert 0 < cut_at < GIB
    resumed = curl("-C", "-", "-w", "%{http_code}", url, token=token, output=str(partial))
    out, errors = resumed.communicate(timeout=120)
    assert (resumed.returncode, out.decode()) == (0, "206"), errors
    assert partial.stat().st_size == GIB
    assert file_sha256(partial) == expected
    partial.unlink()

    # Meanwhile too: a revision on S3 is a redirect to a presigned URL, which then serves the file.
    revision, checkpoint, s3_token = s3_release
    s3_url = f"{front}/acme/tiny/resolve/{revision.commit}/{SHARD}"
    redirect = curl(
        "-w", "%{http_code} %{redirect_url}", "--max-redirs", "0", s3_url, token=s3_token, output="/dev/null"
    )
    status, location = redirect.communicate(timeout=60)[0].decode().split(" ", 1)
    assert status == "302" and "X-Amz-Signature=" in location
    assert location.startswith(f"{s3_endpoint.url}/{s3_endpoint.bucket}/")
    fetched = curl("-w", "%{http_code}", s3_url, token=s3_token, output=str(tmp_path / "shard"))
    out, errors = fetched.communicate(timeout=60)
    assert (fetched.returncode, out.decode()) == (0, "200"), errors
    assert (tmp_path / "shard").read_bytes() == (checkpoint / SHARD).read_bytes()

    reader.join(timeout=300)
    assert slow.wait(timeout=60) == 0, slow.stderr.read().decode()
    elapsed = time.monotonic() - started
    status, size, seconds = slow_result["written"].split()
    assert (status, int(size)) == ("200", GIB)
    assert float(seconds) > 60 and elapsed > 60  # read over more than a minute, and not cut
    assert slow_result["sha256"] == expected
    served = DownloadEvent.objects.filter(repo_id="acme/huge", channel=DownloadEvent.Channel.LOCAL)
    assert sorted(served.values_list("status", flat=True)) == [200, 200, 200, 206]  # the direct ask counts too
    resumed_event = served.get(status=206)
    assert (resumed_event.range_requested, resumed_event.bytes_expected) == (f"bytes={cut_at}-", GIB - cut_at)


def test_gunicorn_cuts_no_download_longer_than_its_timeout_and_finishes_it_when_stopped(worker_env, tmp_path):
    """Without nginx the portal sends the bytes itself, in one of gunicorn's threads: a download that
    outlasts GUNICORN_TIMEOUT (2 s here) is not cut, since the timeout is a heartbeat of the process, and
    a stop (SIGTERM, as systemctl stop sends) lets it finish before gunicorn exits."""
    token, expected, path = release_file("medium", 4 * BLOCK)
    env = {**worker_env, "GUNICORN_TIMEOUT": "2", "GUNICORN_GRACEFUL_TIMEOUT": "30"}
    portal, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log")
    try:
        url = f"{base}/acme/medium/resolve/main/weights.bin"
        reading = curl("--limit-rate", str(8 << 20), "-w", WRITE_OUT, url, token=token)
        result = {}
        reader = threading.Thread(target=hashed, args=(reading, result))
        reader.start()
        time.sleep(3)  # past the timeout: a sync worker busy this long would have been killed
        os.killpg(portal.pid, signal.SIGTERM)
        reader.join(timeout=60)
        assert reading.wait(timeout=60) == 0, reading.stderr.read().decode()
        assert portal.wait(timeout=60) == 0  # gunicorn stopped, once the download was done
    finally:
        path.unlink(missing_ok=True)
        servers.stop_process(portal)
    status, size, seconds = result["written"].split()
    assert (status, int(size), result["sha256"]) == ("200", 4 * BLOCK, expected)
    assert float(seconds) > 4  # twice the timeout


def stored_key(sha256: str) -> str:
    return RevisionFile.objects.get(sha256=sha256).storage_key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(BLOCK):
            digest.update(chunk)
    return digest.hexdigest()
