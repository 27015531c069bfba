"""The rest of the Hub's reading protocol, with the real client against a live server: auth_check,
paths-info, the tree (recursive, expanded), refs, commits, the model list, file and revision checks,
HfFileSystem and `hf cache verify`; and the Hub's refusals, so the client raises its own exceptions."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from huggingface_hub import HfApi, HfFileSystem, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from access.models import Scope, User
from access.services import grant_access
from distribution.models import Repo, Revision, RevisionFile
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ID = "acme/tiny"
SHARD = "model-00002-of-00002.safetensors"


@pytest.fixture
def released(tmp_path):
    return published_tiny_llama(tmp_path, REPO_ID, verify_here=True)


@pytest.fixture
def alice(released):
    grant_access(person("alice"), released[0].repo, granted_by=None)
    return token_for(the("alice"))


def the(username: str) -> User:
    return User.objects.get(username=username)


@pytest.fixture
def hub(live_server):
    return HfApi(endpoint=live_server.url)


@pytest.fixture
def secret():
    """A private repo with a released revision, which outsiders must not tell from a missing one."""
    repo = Repo.objects.create(org="acme", name="secret", private=True)
    revision = Revision.objects.create(
        repo=repo, commit="e" * 40, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    RevisionFile.objects.create(revision=revision, path="config.json", size=2, sha256="ab" * 32)
    return repo


def nested(commit: str, paths: list[str]) -> Revision:
    """acme/nested, released, with files in folders (listing only: their bytes are never asked for)."""
    repo, _ = Repo.objects.get_or_create(org="acme", name="nested")
    revision = Revision.objects.create(
        repo=repo, commit=commit, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    for index, path in enumerate(paths):
        RevisionFile.objects.create(revision=revision, path=path, size=10 + index, sha256=f"{index:02x}" * 32)
    return revision


def test_auth_check_passes_a_grantee_and_refuses_the_others_as_the_hub_does(hub, released, alice, secret):
    hub.auth_check(REPO_ID, token=alice)
    with pytest.raises(GatedRepoError):
        hub.auth_check(REPO_ID, token=token_for(person("dave")))
    with pytest.raises(GatedRepoError):
        hub.auth_check(REPO_ID, token=False)
    for hidden in ("acme/secret", "acme/does-not-exist"):
        with pytest.raises(RepositoryNotFoundError) as raised:
            hub.auth_check(hidden, token=alice)
        assert not isinstance(raised.value, GatedRepoError)
    limited = token_for(the("alice"), scopes=[Scope.READ], repos=[secret])
    with pytest.raises(RepositoryNotFoundError):
        hub.auth_check(REPO_ID, token=limited)  # a token limited to another repo finds no acme/tiny


def test_file_exists_says_yes_or_no_and_raises_only_for_a_gated_repo(hub, released, alice, secret):
    revision, _ = released
    assert hub.file_exists(REPO_ID, "config.json", token=alice)
    assert hub.file_exists(REPO_ID, SHARD, revision=revision.commit, token=alice)
    assert not hub.file_exists(REPO_ID, "no-such-file.json", token=alice)
    assert not hub.file_exists(REPO_ID, "config.json", revision="f" * 40, token=alice)
    assert not hub.file_exists("acme/secret", "config.json", token=alice)
    assert not hub.file_exists("acme/does-not-exist", "config.json", token=alice)
    with pytest.raises(GatedRepoError):
        hub.file_exists(REPO_ID, "config.json", token=token_for(person("dave")))


def test_revision_exists_for_main_a_commit_and_a_tag_and_not_for_others(hub, released, alice, secret):
    revision, _ = released
    call_command("release", REPO_ID, "--revision", revision.commit, "--tag", "v1.0", stdout=io.StringIO())
    for name in ("main", revision.commit, "v1.0"):
        assert hub.revision_exists(REPO_ID, name, token=alice)
    assert not hub.revision_exists(REPO_ID, "v9.9", token=alice)
    assert not hub.revision_exists(REPO_ID, "f" * 40, token=alice)
    assert not hub.revision_exists("acme/secret", "main", token=alice)
    assert hub.revision_exists("acme/secret", "main", token=token_for(person("carol", staff=True)))


def test_paths_info_describes_the_asked_paths_and_leaves_out_missing_ones(hub, released, alice):
    revision, checkpoint = released
    infos = hub.get_paths_info(REPO_ID, ["config.json", "nothing-here.txt", SHARD], token=alice)
    assert [info.path for info in infos] == ["config.json", SHARD]
    stored = revision.files.get(path=SHARD)
    assert isinstance(infos[1], RepoFile) and infos[1].size == (checkpoint / SHARD).stat().st_size
    assert infos[1].lfs.sha256 == stored.sha256 and infos[1].last_commit is None
    expanded = hub.get_paths_info(REPO_ID, "config.json", expand=True, revision=revision.commit, token=False)
    assert expanded[0].last_commit.oid == revision.commit  # metadata, like the tree: open to the anonymous


def test_paths_info_names_folders_and_refuses_like_the_hub(hub, released, alice, secret):
    nested("1" * 40, ["config.json", "docs/a.md", "docs/deep/b.md"])
    infos = hub.get_paths_info("acme/nested", ["docs", "docs/deep/b.md"], token=alice)
    assert isinstance(infos[0], RepoFolder) and infos[0].path == "docs" and infos[1].path == "docs/deep/b.md"
    with pytest.raises(RevisionNotFoundError):
        hub.get_paths_info(REPO_ID, "config.json", revision="v9.9", token=alice)
    for hidden in ("acme/secret", "acme/does-not-exist"):
        with pytest.raises(RepositoryNotFoundError):
            hub.get_paths_info(hidden, "config.json", token=alice)


def test_the_tree_lists_every_level_when_recursive_and_last_commits_when_expanded(hub, released, alice):
    older = nested("1" * 40, ["config.json", "docs/a.md", "docs/deep/b.md"])
    newer = nested("2" * 40, ["config.json", "docs/a.md", "docs/deep/b.md"])
    RevisionFile.objects.filter(revision=newer, path="docs/deep/b.md").update(sha256="ff" * 32)  # changed in newer
    top = list(hub.list_repo_tree("acme/nested", token=alice))
    assert [(type(e).__name__, e.path) for e in top] == [("RepoFile", "config.json"), ("RepoFolder", "docs")]
    every = list(hub.list_repo_tree("acme/nested", recursive=True, expand=True, token=alice))
    assert [e.path for e in every] == ["config.json", "docs", "docs/a.md", "docs/deep", "docs/deep/b.md"]
    last = {e.path: e.last_commit.oid for e in every}
    assert last == {
        "config.json": older.commit,
        "docs": newer.commit,
        "docs/a.md": older.commit,
        "docs/deep": newer.commit,
        "docs/deep/b.md": newer.commit,
    }
    under = list(hub.list_repo_tree("acme/nested", "docs", revision=older.commit, token=alice))
    assert [e.path for e in under] == ["docs/a.md", "docs/deep"]
    assert {e.path: e.last_commit.oid for e in hub.list_repo_tree("acme/nested", expand=True, revision=older.commit)}[
        "docs"
    ] == older.commit  # an older revision's history stops at it


def test_a_long_tree_comes_in_pages_the_client_follows(hub, released, alice, settings, live_server):
    names = [f"part-{number:02}.json" for number in range(7)]
    nested("3" * 40, names)
    settings.HUB_TREE_PAGE_SIZE = 3  # 7 entries: pages of 3, 3 and 1
    assert [e.path for e in hub.list_repo_tree("acme/nested", token=alice)] == names
    fs = HfFileSystem(endpoint=live_server.url, token=alice)
    assert sorted(fs.ls("acme/nested", detail=False)) == [f"acme/nested/{name}" for name in names]
    from tests.support.flows import http

    status, headers, body = http("GET", f"{live_server.url}/api/models/acme/nested/tree/main", token=alice)
    assert status == 200 and len(json.loads(body)) == 3
    assert headers["Link"].endswith('/api/models/acme/nested/tree/main?cursor=3>; rel="next"')
    status, headers, _ = http("GET", f"{live_server.url}/api/models/acme/nested/tree/main?cursor=6", token=alice)
    assert status == 200 and "Link" not in headers  # the last page
    status, _, body = http("GET", f"{live_server.url}/api/models/acme/nested/tree/main?cursor=x", token=alice)
    assert status == 400 and b"list again from the start" in body


def test_the_tree_refuses_like_the_hub(hub, released, alice, secret):
    with pytest.raises(EntryNotFoundError):
        list(hub.list_repo_tree(REPO_ID, "no-such-folder", token=alice))
    with pytest.raises(RevisionNotFoundError):
        list(hub.list_repo_tree(REPO_ID, revision="f" * 40, token=alice))
    for hidden in ("acme/secret", "acme/does-not-exist"):
        with pytest.raises(RepositoryNotFoundError):
            list(hub.list_repo_tree(hidden, token=alice))


def test_model_info_with_files_metadata_gives_each_files_size_and_sha256(hub, released, alice):
    revision, checkpoint = released
    info = hub.model_info(REPO_ID, files_metadata=True, token=alice)
    siblings = {s.rfilename: s for s in info.siblings}
    assert info.sha == revision.commit and set(siblings) == set(revision.files.values_list("path", flat=True))
    for stored in revision.files.all():
        assert siblings[stored.path].size == stored.size and siblings[stored.path].lfs.sha256 == stored.sha256
    assert siblings[SHARD].size == (checkpoint / SHARD).stat().st_size


def test_refs_and_commits_list_the_released_revisions_the_caller_may_name(hub, released, alice, tmp_path):
    older, _ = released
    call_command("release", REPO_ID, "--revision", older.commit, "--tag", "v1.0", stdout=io.StringIO())
    newer, _ = published_tiny_llama(tmp_path / "newer", REPO_ID, verify_here=True, seed=1)
    unreleased, _ = published_tiny_llama(tmp_path / "later", REPO_ID, verify_here=True, seed=2, release=False)
    refs = hub.list_repo_refs(REPO_ID, token=alice)
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", newer.commit)]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", older.commit)]
    commits = hub.list_repo_commits(REPO_ID, token=alice)
    assert [c.commit_id for c in commits] == [newer.commit, older.commit]
    assert commits[1].title == "Release v1.0" and commits[0].authors == ["acme"]
    assert [c.commit_id for c in hub.list_repo_commits(REPO_ID, revision="v1.0", token=alice)] == [older.commit]
    staff = token_for(person("carol", staff=True))
    assert unreleased.commit in [
        c.commit_id for c in hub.list_repo_commits(REPO_ID, revision=unreleased.commit, token=staff)
    ]
    with pytest.raises(RevisionNotFoundError):
        hub.list_repo_commits(REPO_ID, revision=unreleased.commit, token=alice)
    with pytest.raises(RepositoryNotFoundError):
        hub.list_repo_refs("acme/does-not-exist", token=alice)


def test_the_model_list_filters_by_author_and_search_and_never_names_a_hidden_repo(hub, released, alice, secret):
    Repo.objects.create(org="other", name="tiny-two")
    everyone = [m.id for m in hub.list_models(token=False)]
    assert everyone == ["acme/tiny", "other/tiny-two"]
    assert [m.id for m in hub.list_models(author="acme", token=alice)] == ["acme/tiny"]
    assert [m.id for m in hub.list_models(search="TWO", token=alice)] == ["other/tiny-two"]
    assert [m.id for m in hub.list_models(search="secret", token=alice)] == []
    grant_access(the("alice"), secret, granted_by=None)
    assert "acme/secret" in [m.id for m in hub.list_models(author="acme", token=alice)]
    limited = token_for(the("alice"), scopes=[Scope.READ], repos=[secret])
    assert [m.id for m in hub.list_models(token=limited)] == ["acme/secret"]
    no_read = token_for(the("alice"), scopes=[Scope.REVIEW])
    assert "acme/secret" not in [m.id for m in hub.list_models(token=no_read)]
    listed = next(iter(hub.list_models(search="acme/tiny", token=alice)))
    assert listed.sha == released[0].commit and listed.gated == "manual"
    assert len(list(hub.list_models(limit=1, token=alice))) == 1


CARD = "---\nlicense: other\nlanguage: [en]\ntags: [llama, tiny]\n---\n# Tiny\n\nA card.\n"


def test_the_model_list_and_model_info_give_files_card_data_and_config_when_asked(hub, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/carded", verify_here=True, extra_files={"README.md": CARD})
    Repo.objects.create(org="acme", name="empty")  # nothing released: nothing to describe but the repo
    plain = {m.id: m for m in hub.list_models(author="acme", token=False)}
    assert plain["acme/carded"].siblings is None and plain["acme/carded"].card_data is None

    full = {m.id: m for m in hub.list_models(author="acme", full=True, cardData=True, fetch_config=True, token=False)}
    carded = full["acme/carded"]
    assert sorted(s.rfilename for s in carded.siblings) == sorted(f.path for f in revision.files.all())
    assert carded.card_data.license == "other" and carded.card_data.tags == ["llama", "tiny"]
    assert carded.config == {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    assert full["acme/empty"].siblings is None and full["acme/empty"].sha is None

    (expanded,) = hub.list_models(search="carded", expand=["cardData", "sha"], token=False)
    assert (expanded.sha, expanded.card_data.language) == (revision.commit, ["en"])
    assert expanded.siblings is None and expanded.gated is None and expanded.private is None  # only those asked
    info = hub.model_info("acme/carded", expand=["config", "siblings"], token=False)
    assert info.config["model_type"] == "llama" and len(info.siblings) == revision.files.count()
    assert info.card_data is None and info.sha is None

    with pytest.raises(HfHubHTTPError, match="unknown properties to expand: colour") as refused:
        hub.model_info("acme/carded", expand=["colour"], token=False)
    assert refused.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError, match="unknown properties to expand: colour"):
        list(hub.list_models(expand=["colour"], token=False))


def test_hf_file_system_lists_globs_describes_and_reads_ranges(live_server, released, alice):
    revision, checkpoint = released
    fs = HfFileSystem(endpoint=live_server.url, token=alice)
    names = fs.ls(REPO_ID, detail=False)
    assert f"{REPO_ID}/config.json" in names and f"{REPO_ID}/{SHARD}" in names
    assert sorted(fs.glob(f"{REPO_ID}/*.json")) == [
        f"{REPO_ID}/config.json",
        f"{REPO_ID}/generation_config.json",
        f"{REPO_ID}/model.safetensors.index.json",
    ]
    info = fs.info(f"{REPO_ID}/{SHARD}")
    assert info["size"] == (checkpoint / SHARD).stat().st_size and info["type"] == "file"
    whole = (checkpoint / SHARD).read_bytes()
    with fs.open(f"{REPO_ID}/{SHARD}", "rb", block_size=64) as handle:
        handle.seek(100)
        assert handle.read(50) == whole[100:150]
    assert fs.cat(f"{REPO_ID}/config.json") == (checkpoint / "config.json").read_bytes()
    assert fs.cat_file(f"{REPO_ID}@{revision.commit}/{SHARD}", start=8, end=40) == whole[8:40]
    with pytest.raises(FileNotFoundError):
        fs.info(f"{REPO_ID}/no-such-file.json")


def test_hf_cache_verify_passes_on_a_downloaded_snapshot(live_server, released, alice, tmp_path):
    cache = tmp_path / "cache"
    snapshot_download(REPO_ID, endpoint=live_server.url, token=alice, cache_dir=cache)
    env = {**os.environ, "HF_ENDPOINT": live_server.url, "HF_TOKEN": alice, "HF_HUB_CACHE": str(cache)}
    env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN")  # the command reads HF_TOKEN as a person's shell would give it
    hf = str(Path(sys.executable).parent / "hf")
    verify = [hf, "cache", "verify", REPO_ID, "--fail-on-missing-files", "--fail-on-extra-files"]
    result = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout.lower()
    blob = next(p for p in (cache / "models--acme--tiny" / "snapshots").rglob(SHARD))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    Path(os.path.realpath(blob)).write_bytes(bytes(data))
    tampered = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=120)
    assert tampered.returncode == 1 and SHARD in tampered.stdout


def test_a_token_without_the_read_scope_is_told_so(hub, released, alice):
    with pytest.raises(HfHubHTTPError) as raised:
        hub.auth_check(REPO_ID, token=token_for(the("alice"), scopes=[Scope.REVIEW]))
    assert raised.value.response.status_code == 403 and b"read scope" in raised.value.response.content
