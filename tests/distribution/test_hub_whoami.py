"""`whoami-v2` says what a token may do in the Hub's fine-grained format, truthfully: never more than
the token's scopes and repos allow, never more than its owner may. Read by the real client."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from huggingface_hub import HfApi

from access.models import Scope
from access.services import assign_publisher, grant_access
from distribution.models import Repo
from tests.support.commands import run
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice():
    """alice holds a grant to acme/tiny (gated), reviews acme/reviewed and publishes to acme/published."""
    alice = person("alice")
    tiny, reviewed, published = (
        Repo.objects.create(org="acme", name=name) for name in ("tiny", "reviewed", "published")
    )
    Repo.objects.create(org="acme", name="unrelated")
    grant_access(alice, tiny, granted_by=None)
    alice.reviewer_of.create(repo=reviewed)
    assign_publisher(alice, published, via="test")
    return alice


def permissions(info: dict) -> dict[str, list[str]]:
    return {entry["entity"]["name"]: entry["permissions"] for entry in info["fineGrained"]["scoped"]}


def access_token(live_server, token: str) -> dict:
    return HfApi(endpoint=live_server.url, token=token).whoami()["auth"]["accessToken"]


def test_a_read_token_reads_gated_repos_and_nothing_else(live_server, alice):
    info = access_token(live_server, token_for(alice, "laptop", scopes=[Scope.READ]))
    assert info["role"] == "fineGrained" and info["displayName"] == "laptop" and info["expiresAt"] is None
    assert info["fineGrained"]["canReadGatedRepos"] is True and info["fineGrained"]["global"] == []
    assert permissions(info) == {"acme/tiny": ["repo.content.read"]}
    entity = info["fineGrained"]["scoped"][0]["entity"]
    assert entity["type"] == "model" and len(entity["_id"]) == 24


def test_a_token_with_every_scope_shows_each_power_where_its_owner_has_it(live_server, alice):
    info = access_token(live_server, token_for(alice))
    assert permissions(info) == {
        "acme/published": ["repo.write"],
        "acme/reviewed": ["repo.access.read", "repo.access.write"],
        "acme/tiny": ["repo.content.read"],
    }


def test_a_limited_expiring_token_shows_only_its_repos_and_when_it_expires(live_server, alice):
    ends = timezone.now() + timedelta(days=7)
    repos = list(Repo.objects.filter(name__in=["reviewed", "unrelated"]))
    token = token_for(alice, scopes=[Scope.READ, Scope.REVIEW], expires_at=ends, repos=repos)
    info = access_token(live_server, token)
    assert info["fineGrained"]["canReadGatedRepos"] is False
    # unrelated is public but gated: alice may not download it, so the token reads nothing there either.
    assert permissions(info) == {"acme/reviewed": ["repo.access.read", "repo.access.write"]}
    assert info["expiresAt"] == ends.isoformat().replace("+00:00", "Z")


def test_the_clients_login_validates_the_token_and_keeps_it_under_its_name(live_server, alice, tmp_path):
    token = token_for(alice, "workstation", scopes=[Scope.READ])
    env = {**os.environ, "HF_ENDPOINT": live_server.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN", None)
    script = (
        "import sys; from huggingface_hub import login; from huggingface_hub.utils import logging; "
        "logging.set_verbosity_info(); login(token=sys.argv[1], add_to_git_credential=False)"
    )
    done = subprocess.run([sys.executable, "-c", script, token], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Token is valid (permission: fineGrained)" in done.stderr + done.stdout
    stored = (tmp_path / "hf" / "stored_tokens").read_text()
    assert "[workstation]" in stored and token in stored


def test_create_account_prints_a_token_that_publishes_to_the_named_repo(live_server):
    Repo.objects.create(org="acme", name="tiny")
    Repo.objects.create(org="acme", name="other")
    token = run("create_account", "ci", "--email", "ci@example.org", "--publisher-of", "acme/tiny", "--print-token")
    info = access_token(live_server, token.strip())
    assert permissions(info) == {"acme/tiny": ["repo.write"]}
    assert json.dumps(info).count("repo.write") == 1
