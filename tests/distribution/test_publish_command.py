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


@pytest.mark.parametrize("replacement", ["a link", "another file"])
def test_a_file_swapped_after_its_check_is_never_read_and_nothing_of_it_is_stored(tmp_path, monkeypatch, replacement):
    from distribution import publishing
    from distribution.publishing import PublishError, publish_checkpoint
    from distribution.storage import get_storage
    from verification.core.tiny_llama import write_tiny_llama

    secret = tmp_path / "secret.key"
    secret.write_bytes(b"the server's private key")
    checkpoint = write_tiny_llama(tmp_path / "ckpt", shards=2)
    checked = publishing.checkpoint_files

    def swapped_after_the_check(directory):
        files = checked(directory)
        target = checkpoint / "config.json"  # what an attacker with write access to the folder does
        target.unlink()
        if replacement == "a link":
            target.symlink_to(secret)
        else:
            target.write_bytes(secret.read_bytes())  # the same name, perhaps even the same inode
        return files

    def stored_files() -> set:
        return {path for path in get_storage("local").root.rglob("*") if path.is_file()}

    before = stored_files()
    monkeypatch.setattr(publishing, "checkpoint_files", swapped_after_the_check)
    with pytest.raises(PublishError, match=r"config\.json was replaced after it was checked"):
        publish_checkpoint(checkpoint, "acme/swapped", storage_backend="local")
    assert [path for path in stored_files() - before if path.read_bytes() == secret.read_bytes()] == []
