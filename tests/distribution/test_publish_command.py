"""`publish_checkpoint`: a gated repo with an uploaded revision, or one clear error and nothing recorded."""

import pytest
from django.core.management import CommandError

from access.models import GatingPolicy
from distribution.models import Repo, Revision
from distribution.storage import get_storage
from tests.support.commands import run
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db


def test_publish_creates_a_gated_manual_repo_and_prints_the_revision(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    commit = run("publish_checkpoint", str(checkpoint), "--repo", "acme/fresh")
    revision = Revision.objects.get(commit=commit)
    assert len(commit) == 40 and revision.state == Revision.State.UPLOADED
    assert revision.repo.gated and not revision.repo.private
    assert GatingPolicy.for_repo(revision.repo).mode == GatingPolicy.Mode.MANUAL
    assert sorted(f.path for f in revision.files.all()) == sorted(p.name for p in checkpoint.iterdir())
    root = get_storage("local").path(revision.storage_prefix)
    for stored in revision.files.all():
        assert (root / stored.path).read_bytes() == (checkpoint / stored.path).read_bytes()


@pytest.mark.parametrize(
    ("make_input", "repo", "message"),
    [
        (lambda tmp: tmp / "missing", "acme/x", "is not a directory"),
        (lambda tmp: tmp.joinpath("empty").mkdir() or tmp / "empty", "acme/x", "holds no files"),
        (lambda tmp: write_tiny_llama(tmp / "ok"), "just-a-name", "ORG/NAME"),
        (lambda tmp: write_tiny_llama(tmp / "ok"), "acme/..sneaky", "not a valid repo name"),
        (lambda tmp: write_tiny_llama(tmp / "ok"), "api/model", "reserved"),
        (lambda tmp: write_tiny_llama(tmp / "ok"), "account/downloads.csv", "reserved"),
        (lambda tmp: write_tiny_llama(tmp / "ok"), "review/model", "reserved"),
    ],
)
def test_publish_refuses_bad_input_and_records_nothing(tmp_path, make_input, repo, message):
    with pytest.raises(CommandError, match=message):
        run("publish_checkpoint", str(make_input(tmp_path)), "--repo", repo)
    assert not Revision.objects.exists() and not Repo.objects.exists()


def test_publish_refuses_a_symbolic_link(tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    (checkpoint / "escape.json").symlink_to("/etc/hostname")
    with pytest.raises(CommandError, match="symbolic link"):
        run("publish_checkpoint", str(checkpoint), "--repo", "acme/linked")
    assert not Revision.objects.exists()
