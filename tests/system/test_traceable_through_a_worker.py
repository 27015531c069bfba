"""A traceable repo the whole way as deployed: published, verified by a real Celery worker (the served
layout too, at the default carrier share), released, and downloaded with the Hugging Face client through
Debian's nginx (shipped site) in front of gunicorn (shipped config), where a copy's shared prefix goes out
by sendfile and its tail from memory."""

import hashlib
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from huggingface_hub import snapshot_download

from access.services import grant_access
from distribution.models import Revision, TracedCopy, TracedRevision
from tests.support.deployment import behind_nginx
from tests.support.flows import http, traceable_checkpoint, wait_for_verdict
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/traced-by-worker"


@pytest.fixture
def front(worker_env, tmp_path):
    """gunicorn (shipped config, files sent through nginx) and nginx with the shipped site: nginx's URL."""
    with behind_nginx(worker_env, tmp_path, TRUSTED_PROXIES="1", X_ACCEL_REDIRECT_PREFIX="/protected/") as (url, _):
        yield url


def test_a_worker_verifies_the_served_layout_and_each_person_downloads_their_own_copy(worker, front, tmp_path):
    checkpoint = traceable_checkpoint(tmp_path / "checkpoint", vocab=4096)  # carriers at the default 7%
    call_command("publish_checkpoint", str(checkpoint), "--repo", REPO, "--traceable", stdout=io.StringIO())
    revision = wait_for_verdict(Revision.objects.get(repo__name="traced-by-worker"))
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    layout = TracedRevision.objects.get(revision=revision)
    assert revision.runs.first().checks.filter(name="served", code="ServedLayoutVerified", status="pass").exists()
    call_command("release", REPO, stdout=io.StringIO())

    tokens = {}
    for name in ("alice", "bob"):
        account = person(name)
        grant_access(account, revision.repo, granted_by=None)
        tokens[name] = token_for(account)
    folders = {
        name: Path(snapshot_download(REPO, endpoint=front, token=token, local_dir=tmp_path / name))
        for name, token in tokens.items()
    }
    for name, folder in folders.items():
        issued = TracedCopy.objects.get(revision=revision, username=name).files
        for path, entry in issued.items():
            assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == entry["sha256"], (name, path)
    for path in layout.files:
        assert (folders["alice"] / path).read_bytes() != (folders["bob"] / path).read_bytes()

    path, entry = next(iter(layout.files.items()))
    whole = (folders["alice"] / path).read_bytes()
    status, redirect, _ = http("GET", f"{front}/{REPO}/resolve/main/{path}", token=tokens["alice"])
    assert status == 302
    prefix = entry["prefix_size"]
    for first, last in ((prefix - 100, prefix + 99), (0, 99), (prefix, entry["size"] - 1)):
        status, _, part = http("GET", front + redirect["Location"], headers={"Range": f"bytes={first}-{last}"})
        assert (status, part) == (206, whole[first : last + 1]), (first, last)
