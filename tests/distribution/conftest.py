"""Fixtures the distribution tests share."""

import pytest
from huggingface_hub import HfApi, constants

from access.models import Publisher, Scope
from access.services import grant_access
from distribution.downloads import channels, fast_path
from distribution.downloads import spool as event_spool
from distribution.models import Repo
from tests.support.flows import SHARD, published_tiny_llama
from tests.support.personas import person, token_for
from tests.support.publishing import MIB


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


@pytest.fixture
def hub(live_server, monkeypatch):
    """The Hub client against the live portal, uploading by LFS (test_hub_xet.py has the client as installed,
    uploading by Xet)."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return HfApi(endpoint=live_server.url)


@pytest.fixture
def paula():
    """A publisher of acme/first (so she may create repos in acme), with a token that publishes."""
    user = person("paula")
    Publisher.objects.create(user=user, repo=Repo.objects.create(org="acme", name="first"))
    return token_for(user, scopes=[Scope.READ, Scope.PUBLISH])


@pytest.fixture
def on_s3(s3_endpoint, settings):
    """New revisions and uploads go to SeaweedFS, files of 5 MiB and more in parts of 5 MiB (S3's least)."""
    settings.STORAGE_BACKEND = "s3"
    settings.S3_MULTIPART_THRESHOLD = 5 * MIB
    return s3_endpoint


@pytest.fixture
def fresh_process_state():
    """What a web process keeps of served bases and tails, emptied as a process that just started has it."""
    from distribution import copies

    copies._served.clear()
    copies.recent_tails.clear()
    yield
    copies._served.clear()
    copies.recent_tails.clear()
