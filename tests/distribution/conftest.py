"""Fixtures the distribution tests share."""

import pytest

from access.services import grant_access
from tests.support.flows import SHARD, published_tiny_llama
from tests.support.personas import person, token_for


@pytest.fixture
def setup(tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    stored = revision.files.get(path=SHARD)
    return {
        "revision": revision,
        "stored": stored,
        "bytes": (checkpoint / SHARD).read_bytes(),
        "token": token_for(alice),
        "alice": alice,
    }
