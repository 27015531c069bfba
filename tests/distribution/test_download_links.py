"""Download links for curl and wget: the manifest, SHA256SUMS and the generated download.sh, run
for real, on both storage backends, with resume, corruption and every kind of refusal."""

import hashlib
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import signing
from django.utils import timezone

from access.models import Grant
from access.services import grant_access
from distribution.models import DownloadEvent, DownloadTicket, Revision
from distribution.storage import get_storage
from tests.support.flows import expected_release, http, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(params=["local", "s3"])
def release(request, tmp_path):
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
    revision, checkpoint = published_tiny_llama(tmp_path, f"acme/tiny-{request.param}", request.param, verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, checkpoint, token_for(alice)


def fetch_script(live_server, revision, token) -> str:
    status, _, body = http(
        "GET", f"{live_server.url}/api/v1/repos/{revision.repo.repo_id}/revisions/main/download.sh", token=token
    )
    assert status == 200, body
    return body.decode()


def without(tool: str, tmp_path: Path) -> str:
    """A PATH with every usual command but `tool`, so the script must use the other client."""
    shadow = tmp_path / f"no-{tool}"
    shadow.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in Path(folder).iterdir():
            target = shadow / entry.name
            if entry.name != tool and not target.exists():
                target.symlink_to(entry)
    return str(shadow)


def run(script: str, folder: Path, path_env: str | None = None) -> subprocess.CompletedProcess:
    folder.mkdir(exist_ok=True)
    (folder / "download.sh").write_text(script)
    env = {**os.environ, "PARALLEL": "3"}
    if path_env:
        env["PATH"] = path_env
    return subprocess.run(["bash", "download.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def same_files(folder: Path, checkpoint: Path, revision) -> bool:
    return all(
        (folder / path).read_bytes() == content for path, content in expected_release(revision, checkpoint).items()
    )


@pytest.mark.parametrize("client_tool", ["curl", "wget"])
def test_download_sh_fetches_and_verifies_every_file(live_server, release, tmp_path, client_tool):
    revision, checkpoint, token = release
    other = "wget" if client_tool == "curl" else "curl"
    result = run(fetch_script(live_server, revision, token), tmp_path / "out", without(other, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "downloaded and verified" in result.stdout
    assert same_files(tmp_path / "out", checkpoint, revision)
    events = DownloadEvent.objects.filter(ticket__isnull=False)
    assert sorted(events.values_list("path", flat=True)) == sorted(f.path for f in revision.files.all())
    assert {e.username for e in events} == {"alice"}
    assert (client_tool if client_tool == "curl" else "Wget") in events.first().user_agent


def test_a_download_cut_half_way_resumes_where_it_stopped(live_server, release, tmp_path):
    revision, checkpoint, token = release
    out = tmp_path / "out"
    out.mkdir()
    whole = (checkpoint / SHARD).read_bytes()
    (out / SHARD).write_bytes(whole[: len(whole) // 2])
    result = run(fetch_script(live_server, revision, token), out)
    assert result.returncode == 0, result.stderr
    assert same_files(out, checkpoint, revision)
    resumed = DownloadEvent.objects.get(path=SHARD)
    assert resumed.range_requested == f"bytes={len(whole) // 2}-"
    assert resumed.status in (206, 302)
    second = run(fetch_script(live_server, revision, token), out)
    assert second.stdout.count("already complete") == revision.files.count()


def test_a_file_whose_bytes_do_not_match_is_named_and_the_script_fails(live_server, tmp_path):
    revision, _checkpoint = published_tiny_llama(tmp_path, "acme/bitrot", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    stored = get_storage("local").path(f"{revision.storage_prefix}/config.json")
    stored.write_bytes(stored.read_bytes().replace(b"llama", b"LLAMA"))  # same size, other bytes
    result = run(fetch_script(live_server, revision, token_for(alice)), tmp_path / "out")
    assert result.returncode == 1
    assert "FAILED  config.json: its sha256 is not" in result.stderr
    assert (tmp_path / "out" / "config.json.corrupt").exists()


def test_an_expired_link_says_when_and_where_to_renew(live_server, release, tmp_path):
    revision, _, token = release
    script = fetch_script(live_server, revision, token)
    DownloadTicket.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    result = run(script, tmp_path / "out")
    assert result.returncode == 1
    assert "expired at" in result.stderr and f"get a new link at /{revision.repo.repo_id}" in result.stderr
    assert not DownloadEvent.objects.exists()


def test_sha256sums_checks_with_sha256sum(live_server, release, tmp_path):
    revision, checkpoint, token = release
    status, _, body = http(
        "GET", f"{live_server.url}/api/v1/repos/{revision.repo.repo_id}/revisions/main/SHA256SUMS", token=token
    )
    assert status == 200
    folder = tmp_path / "release"
    for path, content in expected_release(revision, checkpoint).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    (folder / "SHA256SUMS").write_bytes(body)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == revision.files.count()


def manifest(live_server, revision, token) -> dict:
    status, _, body = http(
        "GET", f"{live_server.url}/api/v1/repos/{revision.repo.repo_id}/revisions/main/manifest", token=token
    )
    assert status == 200, body
    return json.loads(body)


def test_the_manifest_shows_each_file_and_the_links_limits(live_server, release):
    revision, checkpoint, token = release
    listing = manifest(live_server, revision, token)
    assert listing["max_uses"] == 100 and listing["expires_at"].endswith("Z")
    by_path = {f["path"]: f for f in listing["files"]}
    data = (checkpoint / SHARD).read_bytes()
    assert by_path[SHARD]["sha256"] == hashlib.sha256(data).hexdigest() and by_path[SHARD]["size"] == len(data)
    renewed = manifest(live_server, revision, token)
    assert renewed["files"][0]["url"] != listing["files"][0]["url"]  # asking again renews


def url_of(listing: dict, path: str) -> str:
    return next(f["url"] for f in listing["files"] if f["path"] == path)


def refused_without_bytes(url: str, **kwargs) -> tuple[int, str]:
    status, headers, _body = http("GET", url, **kwargs)
    assert not DownloadEvent.objects.exists()
    return status, headers.get("X-Error-Message", "") if headers else ""


def test_refusals_serve_nothing(live_server, release, tmp_path):
    revision, _, token = release
    listing = manifest(live_server, revision, token)
    url = url_of(listing, SHARD)
    prefix, signed, name = url.rsplit("/", 2)

    for position in range(0, len(signed), max(1, len(signed) // 12)):  # mutations across the whole value
        flipped = signed[:position] + ("A" if signed[position] != "A" else "B") + signed[position + 1 :]
        assert refused_without_bytes(f"{prefix}/{flipped}/{name}")[0] == 403
    forged = signing.Signer(salt="weightgate.download-link", key="not-our-key").sign(signed.split(":")[0])
    assert refused_without_bytes(f"{prefix}/{forged}/{name}")[0] == 403
    assert refused_without_bytes(f"{prefix}/{signed}/../../etc/passwd")[0] == 404
    assert refused_without_bytes(f"{prefix}/{signed}/no-such-file.bin")[0] == 404
    bob = token_for(person("bob"))
    status, message = refused_without_bytes(url, token=bob)
    assert status == 403 and "another account" in message

    DownloadTicket.objects.update(uses=100)
    status, message = refused_without_bytes(url)
    assert status == 403 and "used 100 times" in message
    DownloadTicket.objects.update(uses=0)

    Grant.objects.update(revoked_at=timezone.now())
    assert refused_without_bytes(url)[0] == 403
    Grant.objects.update(revoked_at=None)

    Revision.objects.filter(pk=revision.pk).update(state=Revision.State.WITHDRAWN)
    status, message = refused_without_bytes(url)
    assert status == 403 and "withdrawn" in message


def test_links_need_access_to_be_made(live_server, release):
    revision, _, _ = release
    stranger = token_for(person("dave"))
    status, _, _ = http(
        "GET", f"{live_server.url}/api/v1/repos/{revision.repo.repo_id}/revisions/main/manifest", token=stranger
    )
    assert status == 403
    status, _, _ = http("GET", f"{live_server.url}/api/v1/repos/{revision.repo.repo_id}/revisions/main/download.sh")
    assert status == 401
    assert not DownloadTicket.objects.exists()


def test_links_survive_a_key_rotation_and_only_the_new_key_signs(client, settings, tmp_path):
    from distribution.downloads.links import issue_link, link_prefix

    revision, _ = published_tiny_llama(tmp_path, "acme/rotated", verify_here=True)
    alice = person("alice")
    grant = grant_access(alice, revision.repo, granted_by=None)
    old_link = link_prefix(issue_link(alice, grant, revision)) + "/config.json"
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-brand-new-secret-key-" + "x" * 40, [old_key]
    assert client.get(old_link).status_code == 200  # the old key still verifies
    new_prefix = link_prefix(issue_link(alice, grant, revision))
    settings.SECRET_KEY_FALLBACKS = []
    assert client.get(new_prefix + "/config.json").status_code == 200  # signed with the newest key
    assert client.get(old_link).status_code == 403  # its key retired, the old link stops
