"""Fixtures the distribution tests share."""

import pytest

from access.services import grant_access
from distribution.downloads import channels, fast_path
from distribution.downloads import spool as event_spool
from tests.support.flows import SHARD, published_tiny_llama
from tests.support.personas import person, token_for


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny LLaMA in two shards, as a publisher's client uploads it."""
    from verification.core.tiny_llama import write_tiny_llama

    return write_tiny_llama(tmp_path / "checkpoint", shards=2)


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


@pytest.fixture
def fast(settings, tmp_path, monkeypatch):
    """The fast path on, with a spool of the test's own."""
    settings.DOWNLOAD_DECISION_SECONDS = 2
    fast_path.decisions.clear()
    channels.presigned_links.clear()
    # A spool of the test's own that stores only when the test says: a thread storing every 250 ms
    # would race the counts the tests assert.
    own = event_spool.EventSpool(tmp_path / "spool", flush_seconds=3600)
    monkeypatch.setattr(event_spool, "_spool", own)
    yield
    own.close()  # stores what is left: nothing of this test reaches the next one's database
    fast_path.decisions.clear()


@pytest.fixture
def traced(settings, tmp_path):
    """acme/traced published traceable and released, alice, bob and carol granted: (revision,
    checkpoint directory, each one's token by name)."""
    from access.services import grant_access
    from tests.support.flows import published_traceable
    from tests.support.personas import person, token_for

    settings.TRACE_CARRIER_PERMILLE = 1000  # the test model is tiny: every candidate tensor must carry
    revision, checkpoint = published_traceable(tmp_path, "acme/traced")
    tokens = {}
    for name in ("alice", "bob", "carol"):
        account = person(name)
        grant_access(account, revision.repo, granted_by=None)
        tokens[name] = token_for(account)
    return revision, checkpoint, tokens
