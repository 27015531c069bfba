"""Fixtures the audit tests share: a chain checked whole after the test, a gated repo, a release."""

import pytest

from access.models import GatingPolicy
from audit.chain import first_break
from distribution.models import Repo


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
