"""Fixtures the audit tests share: a chain checked whole after the test, a gated repo, a release."""

import pytest

from access.models import GatingPolicy
from access.services import grant_access
from audit.chain import first_break
from distribution.models import Repo
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for


@pytest.fixture
def chain_checked():
    """Every test here ends with the chain whole: the new events are appended like any other."""
    yield
    assert first_break() is None


@pytest.fixture
def repo():
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo, reapply_cooldown_days=0)
    return repo


@pytest.fixture
def release(tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, token_for(alice)
