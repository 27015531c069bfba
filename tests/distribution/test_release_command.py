"""`release`: it refuses unknown repos, revisions not verified and tags that could not name a revision."""

import pytest
from django.core.management import CommandError

from distribution.models import Revision
from tests.support.commands import run
from tests.support.flows import publish
from verification.core.tiny_llama import write_tiny_llama

pytestmark = pytest.mark.django_db


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


@pytest.mark.parametrize("tag", ["main", "a" * 40, "-x", "two words", "x" * 65])
def test_release_refuses_a_tag_that_could_not_name_a_revision(tmp_path, tag):
    revision = publish(write_tiny_llama(tmp_path / "ckpt"), "acme/tagged", "local")
    Revision.objects.filter(pk=revision.pk).update(state=Revision.State.RELEASED)
    with pytest.raises(CommandError, match="cannot name a revision"):
        run("release", "acme/tagged", "--revision", revision.commit, f"--tag={tag}")
    revision.refresh_from_db()
    assert revision.tag == ""
