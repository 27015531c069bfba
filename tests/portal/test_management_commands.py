"""The operator commands: what they do, and one clear line and a non-zero exit for bad input."""

import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from access.models import ApiToken, GatingPolicy, Reviewer, User, hash_token
from distribution.models import Repo, Revision
from distribution.storage import get_storage
from portal.models import AuditEvent
from tests.support.flows import publish
from tests.support.servers import REPO_ROOT
from verification.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


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


def test_release_refuses_unknown_repos_and_unverified_revisions(tmp_path):
    with pytest.raises(CommandError, match="no repo acme/ghost"):
        run("release", "acme/ghost")
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/waiting", "local")
    with pytest.raises(CommandError, match="no verified revision"):
        run("release", "acme/waiting")
    with pytest.raises(CommandError, match="is uploaded, not verified"):
        run("release", "acme/waiting", "--revision", revision.commit[:10])
    revision.refresh_from_db()
    assert revision.state == Revision.State.UPLOADED


def test_create_account_makes_a_verified_reviewer_with_a_hashed_token(tmp_path):
    Repo.objects.create(org="acme", name="tiny")
    token = run(
        "create_account",
        "bob",
        "--email",
        "bob@example.org",
        "--verified",
        "--reviewer-of",
        "acme/tiny",
        "--print-token",
    )
    bob = User.objects.get(username="bob")
    assert bob.email_verified and not bob.has_usable_password()
    assert Reviewer.objects.filter(user=bob, repo__name="tiny").exists()
    assigned = AuditEvent.objects.get(tag="access:reviewer:assigned")
    assert (assigned.subject_username, assigned.repo_id, assigned.data["via"]) == ("bob", "acme/tiny", "create_account")
    stored = ApiToken.objects.get(user=bob)
    assert token.startswith("wg_") and stored.digest == hash_token(token)
    assert not ApiToken.objects.filter(digest=token).exists() and token not in stored.hint + stored.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["erin", "--email", "not-an-email"], "is not an email address"),
        (["erin", "--email", "erin@example.org", "--reviewer-of", "acme/none"], "no repo acme/none"),
    ],
)
def test_create_account_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_account", *args)
    assert not User.objects.filter(username="erin").exists()


def test_a_failing_command_exits_non_zero_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "publish_checkpoint", str(tmp_path / "nowhere"), "--repo", "acme/x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "is not a directory" in result.stderr


@pytest.mark.parametrize("tag", ["main", "a" * 40, "-x", "two words", "x" * 65])
def test_release_refuses_a_tag_that_could_not_name_a_revision(tmp_path, tag):
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/tagged", "local")
    Revision.objects.filter(pk=revision.pk).update(state=Revision.State.RELEASED)
    with pytest.raises(CommandError, match="cannot name a revision"):
        run("release", "acme/tagged", "--revision", revision.commit, f"--tag={tag}")
    revision.refresh_from_db()
    assert revision.tag == ""
