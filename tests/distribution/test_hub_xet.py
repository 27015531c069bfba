"""Publishing by Xet, the stock Hub client's default (hf_xet installed, HF_HUB_DISABLE_XET unset), against a
live portal: upload_folder and `hf upload` into local storage and S3 (SeaweedFS), each commit a revision a
real worker verifies and that downloads byte-exact; an upload killed halfway, run again, sends only what is
missing, and a changed folder sent from a machine that remembers nothing sends only the change (the dedup
query answers from the repo's own xorbs, never another repo's); a xorb that is not its hash, or a shard
naming chunks the repo does not hold, is refused with nothing kept; a file whose rebuilt bytes are not the
sha256 its shard gives is refused by the worker, and the commit waiting for it fails; Xet tokens are bound
to repo, holder and time."""

import base64
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from access.models import ApiToken, Publisher, Scope
from access.services import grant_access
from audit.models import AuditEvent
from audit.tags import Tag
from distribution import lfs, publishing, xet, xet_formats
from distribution.models import LfsObject, Repo, Revision, XetXorb
from distribution.storage import StorageError, get_storage
from distribution.tasks import requeue_stuck_assemblies
from tests.support.downloads import early_in_a_window
from tests.support.flows import http, wait_for_verdict, wait_until
from tests.support.personas import person, token_for
from tests.support.publishing import IN_PARTS, MIB, bucket_keys, commit_lines, local_files
from tests.support.servers import s3_client
from tests.support.xet import shard_of_terms, xorb_of
from verification.core.tiny_llama import write_tiny_llama
from workers.celery import app

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"


@pytest.fixture
def paula():
    """A publisher of acme/tiny, with a token that publishes."""
    user = person("paula", publishes=[Repo.objects.create(org="acme", name="tiny")])
    return token_for(user, scopes=[Scope.READ, Scope.PUBLISH])


@pytest.fixture
def hub(live_server, monkeypatch, tmp_path):
    """The client as installed: Xet on, remembering what it uploaded in this test's own cache."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))
    return HfApi(endpoint=live_server.url)


def downloaded(endpoint: str, revision: Revision, tmp_path: Path) -> dict[str, bytes]:
    """The released revision as a granted reader's client downloads it (by HTTP: no Xet header is sent)."""
    call_command("release", REPO_ID, "--revision", revision.commit)
    reader = person("rita")
    grant_access(reader, revision.repo, granted_by=None)
    folder = snapshot_download(REPO_ID, endpoint=endpoint, token=token_for(reader), local_dir=tmp_path / "down")
    return {
        path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file() and path.name != "model.sig"
    }


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_upload_folder_by_xet_publishes_a_revision_that_verifies_and_downloads_byte_exact(
    hub, paula, checkpoint, storage, request, worker, tmp_path
):
    if storage == "s3":
        request.getfixturevalue("on_s3")
    info = hub.upload_folder(repo_id=REPO_ID, folder_path=checkpoint, token=paula, commit_message="by xet")
    revision = Revision.objects.get(commit=info.oid)
    assert revision.storage_backend == storage
    # the shards travelled as xorbs; a worker rebuilds them while the commit waits, then verifies it
    assert XetXorb.objects.filter(repo__name="tiny", storage_backend=storage).exists()
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    # rebuilt into accepted uploads, which the revision's files refer to; the small files went inline
    accepted = LfsObject.objects.filter(repo__name="tiny", state=LfsObject.State.ACCEPTED)
    assert sorted(accepted.values_list("oid", flat=True)) == sorted(
        hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
        for name in os.listdir(checkpoint)
        if name.endswith(".safetensors")
    )
    assert set(accepted.values_list("key", flat=True)) <= set(revision.files.values_list("object_key", flat=True))
    assert downloaded(hub.endpoint, revision, tmp_path) == local_files(checkpoint)


def hf_cli(*args: str, endpoint: str, token: str, cache: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HUB_DISABLE_IMPLICIT_TOKEN": ""}
    env["HF_XET_CACHE"] = str(cache)
    env.pop("HF_HUB_DISABLE_XET", None)
    hf = str(Path(sys.executable).with_name("hf"))
    return subprocess.Popen([hf, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_hf_upload_publishes_a_folder_by_xet(live_server, paula, checkpoint, worker, tmp_path):
    upload = hf_cli("upload", REPO_ID, str(checkpoint), endpoint=live_server.url, token=paula, cache=tmp_path / "c")
    output = upload.communicate(timeout=180)[0]
    assert upload.returncode == 0, output[-2000:]
    revision = Revision.objects.get(repo__name="tiny")
    assert revision.commit in output
    assert XetXorb.objects.filter(repo__name="tiny").exists()
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason


def write_token(endpoint: str, token: str, repo_id: str = REPO_ID) -> dict:
    status, headers, body = http("GET", f"{endpoint}/api/models/{repo_id}/xet-write-token/main", token=token)
    assert status == 200, body
    answer = json.loads(body)
    assert headers["X-Xet-Access-Token"] == answer["accessToken"] and headers["X-Xet-Cas-Url"] == answer["casUrl"]
    return answer


def cas_bytes(url: str, token: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    """(status, the error message or body) of one CAS call."""
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, (error.headers.get("X-Error-Message") or "").encode() or error.read()


def cas(method: str, url: str, token: str, data: bytes | None = None) -> tuple[int, str]:
    status, body = cas_bytes(url, token, method, data)
    return status, body.decode()


def shard_of(xorb_hash: str, chunk_count: int, size: int, sha256: str, file_hash: str = "ab" * 32) -> bytes:
    return shard_of_terms([(xorb_hash, 0, chunk_count, size)], sha256, file_hash)


def sent_as_one_file(endpoint: str, token: str, chunks: list[bytes], sha256: str = "") -> tuple[str, int, str]:
    """A xorb of `chunks` and a shard naming them as one file of `sha256` (by default the bytes' own), sent
    as hf_xet sends them: (that sha256, the shard's status, its message)."""
    access = write_token(endpoint, token)
    xorb_hash, xorb = xorb_of(chunks)
    status, body = cas("POST", f"{access['casUrl']}/v1/xorbs/default/{xorb_hash}", access["accessToken"], xorb)
    assert status == 200, body
    sha256 = sha256 or hashlib.sha256(b"".join(chunks)).hexdigest()
    shard = shard_of(xorb_hash, len(chunks), sum(map(len, chunks)), sha256)
    return sha256, *cas("POST", f"{access['casUrl']}/v1/shards", access["accessToken"], shard)


def committed(endpoint: str, token: str, path: str, oid: str, size: int) -> Revision:
    answer = commit_lines(endpoint, token, [{"key": "lfsFile", "value": {"path": path, "oid": oid, "size": size}}])
    return Revision.objects.get(commit=answer["commitOid"])


@pytest.fixture
def held(monkeypatch) -> list[int]:
    """The rebuilds shards queue, held here rather than sent to a worker (one may be running for the session):
    these tests run the worker's part, `xet.assemble`, themselves, to hold each step still. The upload tests
    above and below have it run on a real worker."""
    queued = []
    monkeypatch.setattr(xet, "queue_assembly", queued.extend)
    return queued


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_file_whose_bytes_are_not_its_sha256_is_refused_as_it_is_rebuilt_and_its_commit_fails(
    live_server, paula, storage, request, settings, held
):
    """The shard is answered once its chunk ranges are held; the commit naming the file waits, assembling;
    the rebuild finds the bytes are not the sha256 and deletes them (on S3, a 6 MB file stored in 5 MiB
    parts: its object and parts), and the waiting revision fails, saying why. The bytes with their true
    sha256 then go through: the refusal was the sha256's."""
    s3 = request.getfixturevalue("on_s3") if storage == "s3" else None
    chunks = [os.urandom(120_000) for _ in range(50)] if s3 else [os.urandom(40_000), os.urandom(30_000)]
    content, other = b"".join(chunks), hashlib.sha256(b"other bytes").hexdigest()
    assert sent_as_one_file(live_server.url, paula, chunks, other) == (other, 200, '{"result": 1}')
    upload = LfsObject.objects.get(oid=other)
    assert held == [upload.pk]
    assert upload.state == LfsObject.State.ASSEMBLING and bytes(upload.head) == content[:512]
    waiting = committed(live_server.url, paula, "weights.safetensors", other, len(content))
    assert waiting.state == Revision.State.ASSEMBLING
    assert "weights.safetensors to be rebuilt from their Xet upload" in waiting.failure_reason

    assert xet.assemble(upload.pk) is None
    assert not LfsObject.objects.exists()
    staged_at = f"uploads/acme/tiny/{other}"
    if s3:
        assert bucket_keys(s3, staged_at + "/") == []
        uploads = s3_client(s3).list_multipart_uploads(Bucket=s3.bucket, Prefix=staged_at)
        assert uploads.get("Uploads", []) == []
    else:
        assert not Path(settings.LOCAL_STORAGE_ROOT, staged_at).exists()
    waiting.refresh_from_db()
    assert waiting.state == Revision.State.FAILED
    assert waiting.failure_reason.startswith("weights.safetensors was refused as it was rebuilt")
    assert f"not the {other} its shard gives" in waiting.failure_reason
    assert AuditEvent.objects.filter(tag=Tag.REVISION_FAILED, data__commit=waiting.commit).exists()

    true_sha, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    revision = committed(live_server.url, paula, "weights.safetensors", true_sha, len(content))
    assert revision.state == Revision.State.ASSEMBLING  # built on nothing: the failed one never held its file
    assembled = xet.assemble(LfsObject.objects.get(oid=true_sha).pk)
    assert assembled.state == LfsObject.State.ACCEPTED
    with get_storage().open(assembled.key) as handle:
        assert handle.read() == content
    revision.refresh_from_db()
    assert revision.state != Revision.State.ASSEMBLING  # uploaded, and on to verification (a worker may run)
    published = AuditEvent.objects.filter(tag=Tag.REVISION_PUBLISHED, data__commit=revision.commit)
    assert sorted(event.data["state"] for event in published) == ["assembling", "uploaded"]
    row = revision.files.get(path="weights.safetensors")
    assert (row.object_key, row.stored_etag) == (assembled.key, assembled.etag)


def test_compressed_chunks_whose_terms_go_back_to_an_earlier_xorb_are_rebuilt_byte_exact_on_s3(
    live_server, paula, on_s3, held, monkeypatch
):
    """A file of chunks stored as hf_xet stores weights (LZ4 after byte grouping) and as plain LZ4, in two
    xorbs, its terms going from xorb A to B and back to A: the rebuild, fetching each xorb ahead of the
    decompression, fetches A again after B, and stores the file in 5 MiB parts, hashed aside, byte-exact."""
    rng = np.random.default_rng(7)

    def weights(size: int) -> bytes:  # bf16-like: the high byte of each value in a narrow range
        values = rng.integers(0, 256, size, dtype=np.uint8)
        values[1::2] = 0x3C + (values[1::2] & 3)
        return values.tobytes()

    a_chunks = [weights(120_000 + n) for n in range(80)]
    b_chunks = [weights(45_000) * 2 for _ in range(20)]  # a repeat inside each chunk, for plain LZ4 to find
    access = write_token(live_server.url, paula)
    hashes = {}
    for name, chunks, compression in (
        ("a", a_chunks, xet_formats.COMPRESSION_BG4_LZ4),
        ("b", b_chunks, xet_formats.COMPRESSION_LZ4),
    ):
        hashes[name], xorb = xorb_of(chunks, compression)
        assert len(xorb) < sum(map(len, chunks))  # the chunks are stored compressed
        status, _ = cas("POST", f"{access['casUrl']}/v1/xorbs/default/{hashes[name]}", access["accessToken"], xorb)
        assert status == 200
    parts = (a_chunks[:40], b_chunks, a_chunks[40:])
    terms = [
        (hashes["a"], 0, 40, sum(map(len, parts[0]))),
        (hashes["b"], 0, 20, sum(map(len, parts[1]))),
        (hashes["a"], 40, 80, sum(map(len, parts[2]))),
    ]
    content = b"".join(b"".join(part) for part in parts)
    assert len(content) > 2 * 5 * MIB  # three parts of the on_s3 part size
    sha256 = hashlib.sha256(content).hexdigest()
    status, _ = cas("POST", f"{access['casUrl']}/v1/shards", access["accessToken"], shard_of_terms(terms, sha256))
    assert status == 200

    fetched, fetch = [], xet.XorbReader.fetch
    recorded = staticmethod(lambda storage, key: fetched.append(key) or fetch(storage, key))
    monkeypatch.setattr(xet.XorbReader, "fetch", recorded)
    assembled = xet.assemble(LfsObject.objects.get(oid=sha256).pk)
    keys = dict(XetXorb.objects.values_list("hash", "key"))
    assert fetched == [keys[hashes["a"]], keys[hashes["b"]], keys[hashes["a"]]]
    assert assembled.state == LfsObject.State.ACCEPTED and assembled.size == len(content)
    with get_storage().open(assembled.key) as handle:
        assert handle.read() == content


def test_a_xorb_that_cannot_be_read_halfway_through_a_rebuild_leaves_it_to_be_tried_again(
    live_server, paula, held, settings
):
    """The second xorb of a file is gone from storage when the worker reaches it (its fetch, on a side thread,
    fails while the first xorb's bytes are being written): the rebuild stops with StorageError, which the task
    retries, the file stays assembling and nothing staged is left. With the xorb back, the retry accepts it."""
    access = write_token(live_server.url, paula)
    # the first xorb more than one 8 MiB write of local storage: the rebuild has written when it fails
    first, second = [os.urandom(120_000) for _ in range(72)], [os.urandom(100_000) for _ in range(2)]
    hashes = []
    for chunks in (first, second):
        xorb_hash, xorb = xorb_of(chunks)
        assert cas("POST", f"{access['casUrl']}/v1/xorbs/default/{xorb_hash}", access["accessToken"], xorb)[0] == 200
        hashes.append(xorb_hash)
    content = b"".join(first + second)
    sha256 = hashlib.sha256(content).hexdigest()
    terms = [(hashes[0], 0, 72, 72 * 120_000), (hashes[1], 0, 2, 200_000)]
    status, _ = cas("POST", f"{access['casUrl']}/v1/shards", access["accessToken"], shard_of_terms(terms, sha256))
    assert status == 200
    upload = LfsObject.objects.get(oid=sha256)
    gone = Path(settings.LOCAL_STORAGE_ROOT, XetXorb.objects.get(hash=hashes[1]).key)
    kept = gone.read_bytes()
    gone.unlink()

    with pytest.raises(StorageError, match="could not be rebuilt and stored"):
        xet.assemble(upload.pk)
    upload.refresh_from_db()
    assert upload.state == LfsObject.State.ASSEMBLING
    staged = Path(settings.LOCAL_STORAGE_ROOT, lfs.staging_key(upload, get_storage()))
    assert not staged.exists() and not staged.parent.exists()

    gone.write_bytes(kept)
    assembled = xet.assemble(upload.pk)
    assert assembled.state == LfsObject.State.ACCEPTED
    with get_storage().open(assembled.key) as handle:
        assert handle.read() == content


def test_commits_waiting_for_a_rebuild_complete_in_order_and_the_newest_supersedes(live_server, paula, held):
    """A second commit made while the first still waits carries its file (referring to the same upload) and
    waits too; once the file is accepted both complete, oldest first, so the newer supersedes the older:
    only it goes on to verification."""
    chunks = [os.urandom(50_000), os.urandom(50_000)]
    sha256, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    first = committed(live_server.url, paula, "notes.txt", sha256, 100_000)
    config = {"path": "config.json", "content": base64.b64encode(b'{"model_type": "llama"}').decode()}
    answer = commit_lines(live_server.url, paula, [{"key": "file", "value": config}])
    second = Revision.objects.get(commit=answer["commitOid"])
    assert (first.state, second.state) == (Revision.State.ASSEMBLING, Revision.State.ASSEMBLING)
    upload = LfsObject.objects.get(oid=sha256)
    assert second.files.get(path="notes.txt").object_key == upload.key
    # Not a whole revision yet: not even staff, who may download unreleased ones, can name it.
    staff = token_for(person("sam", staff=True))
    status, headers, _ = http("GET", f"{live_server.url}/{REPO_ID}/resolve/{second.commit}/notes.txt", token=staff)
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"

    xet.assemble(upload.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == Revision.State.FAILED and "superseded by the newer commit" in first.failure_reason
    assert second.state != Revision.State.ASSEMBLING  # uploaded, and on to verification (a worker may run)
    assert sorted(second.files.values_list("path", flat=True)) == ["config.json", "notes.txt"]
    with get_storage().open(second.files.get(path="notes.txt").storage_key) as handle:
        assert handle.read() == b"".join(chunks)
    url = f"{live_server.url}/{REPO_ID}/resolve/{second.commit}/notes.txt"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {staff}"})) as got:
        assert got.read() == b"".join(chunks)  # through the portal's own short-lived link


def test_a_file_accepted_while_its_commit_is_being_made_leaves_no_revision_waiting(
    live_server, paula, held, monkeypatch
):
    """The worker accepts the file just after the commit found it still being rebuilt, before the revision is
    moved to assembling, where the worker would have found it: the commit looks again and completes it."""
    chunks = [os.urandom(30_000), os.urandom(30_000)]
    sha256, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    upload = LfsObject.objects.get(oid=sha256)
    looked = publishing.still_assembling

    def worker_done_meanwhile(rows):
        found = looked(rows)
        if found:
            xet.assemble(upload.pk)
        return found

    monkeypatch.setattr(publishing, "still_assembling", worker_done_meanwhile)
    revision = committed(live_server.url, paula, "notes.txt", sha256, 60_000)
    assert revision.state != Revision.State.ASSEMBLING  # uploaded, and on to verification (a worker may run)
    published = AuditEvent.objects.filter(tag=Tag.REVISION_PUBLISHED, data__commit=revision.commit)
    assert sorted(event.data["state"] for event in published) == ["assembling", "uploaded"]
    row = revision.files.get(path="notes.txt")
    assert (row.object_key, row.stored_etag) == (upload.key, LfsObject.objects.get(pk=upload.pk).etag)


def test_a_file_accepted_while_its_commit_looks_for_it_is_found(live_server, paula, held, monkeypatch):
    """The worker accepts the file between the commit's two looks (held, being rebuilt): whichever it finds
    first, the commit names it (it looks at the uploads being rebuilt first, then at those accepted)."""
    chunks = [os.urandom(30_000), os.urandom(30_000)]
    sha256, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    upload = LfsObject.objects.get(oid=sha256)
    looks = {"held": lfs.stored_source, "assembling": lfs.assembling_source}

    def looked(name):
        def look(*args):
            found = looks[name](*args)
            if found is None and LfsObject.objects.filter(pk=upload.pk, state=LfsObject.State.ASSEMBLING).exists():
                xet.assemble(upload.pk)  # the worker, done just after this look
            return found

        return look

    monkeypatch.setattr(lfs, "stored_source", looked("held"))
    monkeypatch.setattr(lfs, "assembling_source", looked("assembling"))
    revision = committed(live_server.url, paula, "notes.txt", sha256, 60_000)
    assert revision.files.get(path="notes.txt").object_key == upload.key


def test_a_shard_whose_file_starts_as_a_pickle_is_taken_but_its_commit_refused(live_server, paula, held):
    """The commit judges a file sent by Xet by its first bytes before any worker rebuilt it: read from the
    shard's first chunk when the shard came, as an LFS upload's are at its completion."""
    chunks = [pickle.dumps({"weights": list(range(5000))}, protocol=4), os.urandom(30_000)]
    sha256, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    with pytest.raises(HfHubHTTPError, match=r"notes\.txt is a pickle-based file"):
        committed(live_server.url, paula, "notes.txt", sha256, sum(map(len, chunks)))
    assert not Revision.objects.exists()


def test_a_shard_whose_chunk_ranges_the_xorb_does_not_hold_is_refused_at_once(live_server, paula, held):
    access = write_token(live_server.url, paula)
    chunks = [os.urandom(40_000), os.urandom(30_000)]
    xorb_hash, xorb = xorb_of(chunks)
    assert cas("POST", f"{access['casUrl']}/v1/xorbs/default/{xorb_hash}", access["accessToken"], xorb)[0] == 200
    sha = hashlib.sha256(b"".join(chunks)).hexdigest()
    for count, size, problem in ((3, 70_000, "which has 2"), (2, 69_999, "hold 70000 bytes, not 69999")):
        shard = shard_of(xorb_hash, count, size, sha)
        status, message = cas("POST", f"{access['casUrl']}/v1/shards", access["accessToken"], shard)
        assert status == 400 and problem in message and "Nothing was kept" in message
    assert not LfsObject.objects.exists()


def test_a_rebuild_whose_message_was_lost_is_sent_again(live_server, paula, held):
    chunks = [os.urandom(20_000)]
    sha256, status, _ = sent_as_one_file(live_server.url, paula, chunks)
    assert status == 200
    upload = LfsObject.objects.get(oid=sha256)
    assert xet.stuck_assemblies() == []
    LfsObject.objects.filter(pk=upload.pk).update(created_at=timezone.now() - xet.ASSEMBLY_STUCK_AFTER)
    assert requeue_stuck_assemblies() == 1 and held == [upload.pk, upload.pk]
    scheduled = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert scheduled["distribution.tasks.requeue_stuck_assemblies"] <= 3600


def test_a_shard_naming_a_missing_xorb_or_malformed_is_refused(live_server, paula):
    access = write_token(live_server.url, paula)
    sha = hashlib.sha256(b"x").hexdigest()
    status, message = cas(
        "POST", f"{access['casUrl']}/v1/shards", access["accessToken"], shard_of("ef" * 32, 1, 1, sha)
    )
    assert status == 400 and "does not hold" in message and "ef" * 32 in message
    status, message = cas("POST", f"{access['casUrl']}/v1/shards", access["accessToken"], b"not a shard" * 10)
    assert status == 400 and "not an MDB shard" in message
    status, message = cas(
        "POST", f"{access['casUrl']}/v1/xorbs/default/{'12' * 32}", access["accessToken"], b"\x07" * 64
    )
    assert status == 400 and "header version 7" in message
    assert not LfsObject.objects.exists() and not XetXorb.objects.exists()


def test_a_xorb_whose_bytes_are_not_its_hash_is_refused_and_nothing_is_stored(live_server, paula, settings):
    access = write_token(live_server.url, paula)
    true_hash, xorb = xorb_of([os.urandom(50_000), os.urandom(20_000)])
    claimed = "ab" * 32
    status, message = cas("POST", f"{access['casUrl']}/v1/xorbs/default/{claimed}", access["accessToken"], xorb)
    assert status == 400 and f"its chunks hash to {true_hash}, not the hash it was sent under" in message
    assert "Nothing of it was kept" in message
    assert not XetXorb.objects.exists()
    assert not Path(settings.LOCAL_STORAGE_ROOT, "xet", "acme", "tiny", "xorbs", claimed).exists()
    # the same bytes under their own hash are kept: the refusal was the hash's
    status, body = cas("POST", f"{access['casUrl']}/v1/xorbs/default/{true_hash}", access["accessToken"], xorb)
    assert (status, body) == (200, '{"was_inserted": true}')


def test_a_dedup_query_answers_from_the_repos_own_xorbs_only(live_server, paula):
    """The chunk query is answered with a shard listing the xorb that holds the chunk, for the repo the
    token is for; another repo's publisher asking about the same chunk learns nothing (404)."""
    other = Repo.objects.create(org="acme", name="other")
    olga = token_for(person("olga", publishes=[other]), scopes=[Scope.READ, Scope.PUBLISH])
    chunks = [os.urandom(30_000) for _ in range(3)]
    xorb_hash, xorb = xorb_of(chunks)
    mine = write_token(live_server.url, paula)
    assert cas("POST", f"{mine['casUrl']}/v1/xorbs/default/{xorb_hash}", mine["accessToken"], xorb)[0] == 200
    first_chunk = xet_formats.hash_text(xet_formats.chunk_hash(chunks[0]))

    status, answer = cas_bytes(f"{mine['casUrl']}/v1/chunks/default/{first_chunk}", mine["accessToken"])
    assert status == 200 and answer.startswith(xet_formats.SHARD_HEADER_TAG)
    assert xet_formats.shard_files(answer) == []  # no file information: only the xorb's chunks
    assert xet_formats.hash_raw(xorb_hash) in answer
    assert all(xet_formats.chunk_hash(chunk) in answer for chunk in chunks)

    theirs = write_token(live_server.url, olga, "acme/other")
    status, message = cas("GET", f"{theirs['casUrl']}/v1/chunks/default/{first_chunk}", theirs["accessToken"])
    assert status == 404 and "acme/other holds no xorb with chunk" in message
    status, message = cas("GET", f"{mine['casUrl']}/v1/chunks/default/{'34' * 32}", mine["accessToken"])
    assert status == 404 and "acme/tiny holds no xorb" in message


def test_tampered_expired_other_repo_and_revoked_xet_tokens_are_refused(live_server, paula, settings):
    Repo.objects.create(org="acme", name="other")
    access = write_token(live_server.url, paula)
    xorb_hash, body = xorb_of([b"a chunk"])
    xorb_url = f"{access['casUrl']}/v1/xorbs/default/{xorb_hash}"
    tampered = access["accessToken"][:-2] + ("AA" if not access["accessToken"].endswith("AA") else "BB")
    status, message = cas("POST", xorb_url, tampered)
    assert status == 401 and "not valid" in message
    status, message = cas("POST", xorb_url.replace("/acme/tiny/", "/acme/other/"), access["accessToken"], body)
    assert status == 403 and "given for acme/tiny, not acme/other" in message
    status, message = cas("POST", xorb_url, "", body)
    assert status == 401 and "Authorization: Bearer" in message
    settings.XET_TOKEN_SECONDS = 1
    time.sleep(2)
    status, message = cas("POST", xorb_url, access["accessToken"], body)
    assert status == 401 and "expired" in message
    settings.XET_TOKEN_SECONDS = 3600
    ApiToken.objects.filter(user__username="paula").update(revoked_at=timezone.now())
    status, message = cas("POST", xorb_url, access["accessToken"], body)
    assert status == 401 and "revoked" in message
    assert not XetXorb.objects.exists()


def test_only_a_publisher_gets_a_xet_write_token(live_server, paula):
    url = f"{live_server.url}/api/models/{REPO_ID}/xet-write-token/main"
    assert http("GET", url)[0] == 401
    reader = person("rita")
    grant_access(reader, Repo.objects.get(name="tiny"), granted_by=None)
    status, headers, _ = http("GET", url, token=token_for(reader))
    assert status == 403 and "X-Xet-Access-Token" not in headers
    # a publisher's token without the publish scope gets none either
    status, _, _ = http("GET", url, token=token_for(Publisher.objects.get().user, scopes=[Scope.READ]))
    assert status == 403


# About 180 MB in four shards: three xorbs or more (a xorb holds up to 64 MiB), so a run can die between them.
LARGE = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 14,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 4096,
}


@dataclass
class Sent:
    """What the live portal was sent: each xorb (hash, bytes, bytes once decompressed) and each dedup query
    (chunk hash, answered or not)."""

    xorbs: list[tuple[str, int, int]] = field(default_factory=list)
    queries: list[tuple[str, bool]] = field(default_factory=list)
    storing: int = 0  # xorbs being stored now: one may still be after its sender was killed

    def clear(self):
        self.xorbs.clear()
        self.queries.clear()

    @property
    def plain_bytes(self) -> int:
        return sum(plain for _, _, plain in self.xorbs)


@pytest.fixture
def sent(monkeypatch) -> Sent:
    record, store, answer = Sent(), xet.store_xorb, xet.dedup_answer

    def counted_store(access, xorb_hash, data):
        plain = sum(chunk.size for chunk in xet_formats.xorb_chunks(data))
        record.xorbs.append((xorb_hash, len(data), plain))
        record.storing += 1
        try:
            return store(access, xorb_hash, data)
        finally:
            record.storing -= 1

    def counted_answer(access, chunk_hash):
        shard = answer(access, chunk_hash)
        record.queries.append((chunk_hash, shard is not None))
        return shard

    monkeypatch.setattr(xet, "store_xorb", counted_store)
    monkeypatch.setattr(xet, "dedup_answer", counted_answer)
    return record


def upload_folder_process(endpoint: str, token: str, folder: Path, cache: Path) -> subprocess.Popen:
    script = (
        "import sys; from huggingface_hub import HfApi; "
        "api = HfApi(endpoint=sys.argv[1], token=sys.argv[2]); "
        "print(api.upload_folder(repo_id=sys.argv[3], folder_path=sys.argv[4]).oid)"
    )
    env = {**os.environ, "HF_XET_CACHE": str(cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_DISABLE_XET", None)
    return subprocess.Popen(
        [sys.executable, "-c", script, endpoint, token, REPO_ID, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def uploaded(endpoint: str, token: str, folder: Path, cache: Path) -> str:
    """The commit of one upload_folder run to its end."""
    run = upload_folder_process(endpoint, token, folder, cache)
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output[-3000:]
    return output.split()[-1]


def plain_size(xorb_hashes) -> int:
    """The bytes the stored xorbs of these hashes hold once decompressed, from their chunk lists."""
    lists = XetXorb.objects.filter(hash__in=list(xorb_hashes)).values_list("chunks", flat=True)
    return sum(record.size for packed in lists for record in xet_formats.unpacked_records(bytes(packed)))


def safetensors_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def test_an_upload_killed_halfway_sends_only_what_is_missing_when_run_again_and_verifies(
    live_server, paula, tmp_path, sent, on_s3, worker
):
    """hf_xet asks the dedup query about each file's first chunk (and the eligible ones) before sending;
    the portal answers with the xorbs the killed run left, so the second run sends none of them again."""
    folder = write_tiny_llama(tmp_path / "large", shards=4, config_overrides=LARGE)
    cache = tmp_path / "xet-cache"
    first = upload_folder_process(live_server.url, paula, folder, cache)
    wait_until(lambda: XetXorb.objects.filter(repo__name="tiny").exists(), timeout=120, what="a first xorb stored")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    wait_until(lambda: sent.storing == 0, timeout=60, what="the xorbs received before the kill stored")
    stored_first = set(XetXorb.objects.values_list("hash", flat=True))
    assert not Revision.objects.filter(repo__name="tiny").exists() and not LfsObject.objects.exists()
    sent.clear()
    uploaded(live_server.url, paula, folder, cache)
    sent_again = {xorb_hash for xorb_hash, _, _ in sent.xorbs}
    assert any(answered for _, answered in sent.queries), sent.queries
    assert not sent_again & stored_first  # none of what the killed run stored travels again
    # what the second run sent is what the first did not: the folder's bytes less those already stored
    missing = safetensors_size(folder) - plain_size(stored_first)
    assert sent.plain_bytes <= missing + MIB, (sent.plain_bytes, missing)
    assert sorted(XetXorb.objects.values_list("hash", flat=True)) == sorted(stored_first | sent_again)
    revision = Revision.objects.get(repo__name="tiny")
    assert revision.storage_backend == "s3"
    assert wait_for_verdict(revision).state == Revision.State.VERIFIED, revision.failure_reason
    files = {row.path: row.sha256 for row in revision.files.all() if row.path != "model.sig"}
    assert files == {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_a_changed_folder_sent_from_a_machine_that_remembers_nothing_sends_only_the_changed_shard(
    live_server, paula, tmp_path, sent, worker
):
    """A second upload with an empty client cache (another machine): the portal's dedup answers stand in
    for what the client does not remember, so only the changed shard's bytes are sent."""
    folder = write_tiny_llama(tmp_path / "model", shards=3, config_overrides=IN_PARTS)
    uploaded(live_server.url, paula, folder, tmp_path / "cache-1")
    changed = sorted(folder.glob("*.safetensors"))[1]
    retrained = write_tiny_llama(tmp_path / "retrained", shards=3, config_overrides=IN_PARTS, seed=1)
    changed.write_bytes((retrained / changed.name).read_bytes())
    sent.clear()
    commit = uploaded(live_server.url, paula, folder, tmp_path / "cache-2")
    assert any(answered for _, answered in sent.queries), sent.queries
    size = changed.stat().st_size
    assert size - MIB <= sent.plain_bytes <= size + MIB, (sent.plain_bytes, size, safetensors_size(folder))
    # the changed shard was rebuilt, the others kept: each is the commit's accepted upload of its sha256
    revision = Revision.objects.get(commit=commit)
    wait_until(
        lambda: Revision.objects.get(pk=revision.pk).state != Revision.State.ASSEMBLING, timeout=120, what="the rebuild"
    )
    accepted = set(LfsObject.objects.filter(state=LfsObject.State.ACCEPTED).values_list("oid", flat=True))
    assert {hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.safetensors")} <= accepted


def test_the_daily_job_deletes_xorbs_older_than_xet_xorb_days_and_keeps_newer_ones(settings):
    repo = Repo.objects.create(org="acme", name="tiny")
    storage = get_storage()
    for xorb_hash, age in (("01" * 32, 8), ("02" * 32, 1)):
        key = xet.xorb_key(repo, xorb_hash)
        storage.put_bytes(key, xorb_of([b"chunk"])[1])
        XetXorb.objects.create(
            repo=repo,
            hash=xorb_hash,
            size=13,
            storage_backend=storage.name,
            key=key,
            created_at=timezone.now() - timedelta(days=age),
        )
    assert xet.discard_old_xorbs() == 1
    assert list(XetXorb.objects.values_list("hash", flat=True)) == ["02" * 32]
    assert not Path(settings.LOCAL_STORAGE_ROOT, xet.xorb_key(repo, "01" * 32)).exists()
    assert Path(settings.LOCAL_STORAGE_ROOT, xet.xorb_key(repo, "02" * 32)).exists()


def test_cas_calls_count_against_the_callers_rate_limit(live_server, paula, settings):
    """Counted with the caller's other Hub calls, under the API token the Xet token was issued for."""
    settings.DOWNLOAD_RATE_LIMIT = (3, 60)
    early_in_a_window(60)
    access = write_token(live_server.url, paula)  # the first of the three
    url = f"{access['casUrl']}/v1/chunks/default/{'cd' * 32}"
    answers = [http("GET", url, token=access["accessToken"]) for _ in range(3)]
    assert [status for status, _, _ in answers] == [404, 404, 429]
    _, headers, body = answers[-1]
    assert int(headers["Retry-After"]) > 0 and b"Too many requests: at most 3 every 60 s" in body
    status, _, _ = http("GET", f"{live_server.url}/api/whoami-v2", token=paula)
    assert status == 429  # the same count as the token's other calls
