"""The README's backup and restore, done for real: pg_dump the portal's database, drop it, create it
again, pg_restore, `manage.py check_restore`, then a Hub-client download whose files match SHA256SUMS.
A restore that does not match its storage is named."""

import hashlib
import subprocess
import sys

import pytest
from django.db import connection
from huggingface_hub import snapshot_download

from access.services import grant_access
from audit import anchors
from distribution.storage import get_storage
from portal.anchors import anchor_head
from tests.support import servers
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def postgres_command(program: str, *arguments: str) -> subprocess.CompletedProcess:
    settings = connection.settings_dict
    login = ["-h", settings["HOST"] or "127.0.0.1", "-p", str(settings["PORT"] or 5432), "-U", settings["USER"]]
    return subprocess.run([program, *login, *arguments], capture_output=True, text=True, timeout=120, check=True)


def check_restore(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check_restore"], cwd=servers.REPO_ROOT, env=env, capture_output=True, text=True
    )


@pytest.fixture
def anchored_storage():
    storage = get_storage()
    storage.delete_prefix(anchors.PREFIX)
    yield
    storage.delete_prefix(anchors.PREFIX)


def test_a_dumped_dropped_and_restored_portal_serves_its_release_whole(worker_env, anchored_storage, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("pg_dump and pg_restore are PostgreSQL's")
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    assert anchor_head() is not None
    name = connection.settings_dict["NAME"]
    dump = tmp_path / "weightgate.dump"
    postgres_command("pg_dump", "--format=custom", f"--file={dump}", name)

    servers.close_other_sessions()
    connection.close()
    postgres_command("dropdb", name)  # the loss
    postgres_command("createdb", name)
    postgres_command("pg_restore", "--no-owner", f"--dbname={name}", str(dump))

    checked = check_restore(worker_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the restore is whole" in checked.stdout and "intact against its anchors" in checked.stdout
    server, base = servers.start_gunicorn(worker_env, tmp_path / "gunicorn.log")
    try:
        folder = snapshot_download("acme/tiny", endpoint=base, token=token, local_dir=tmp_path / "download")
        sums = subprocess.run(
            [
                "curl",
                "-sSf",
                "-H",
                f"Authorization: Bearer {token}",
                f"{base}/api/v1/repos/acme/tiny/revisions/main/SHA256SUMS",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        servers.stop_process(server)
    expected = dict(reversed(line.split(maxsplit=1)) for line in sums.splitlines())
    assert expected and set(expected) <= {path.name for path in (tmp_path / "download").iterdir()}
    for path, digest in expected.items():
        assert hashlib.sha256((tmp_path / "download" / path).read_bytes()).hexdigest() == digest, path
    assert folder


def test_a_restore_that_does_not_match_its_storage_is_named(worker_env, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    # As if the database came from a later backup than the storage: a size no stored object has.
    shard = revision.files.get(path="model-00001-of-00002.safetensors")
    type(shard).objects.filter(pk=shard.pk).update(size=shard.size + 1)
    checked = check_restore(worker_env)
    assert checked.returncode == 1
    assert f"model-00001-of-00002.safetensors holds {shard.size} bytes, not the {shard.size + 1}" in checked.stdout
