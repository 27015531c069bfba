"""The publishing page: a repo's revisions for its publishers, each check's outcome as the workers get
through them (and its JSON twin), and the release of a verified revision with a tag from the page.
Who may reach it, role by role, is in tests/access/test_permission_matrix.py."""

import pytest
from django.test import Client
from django.utils import timezone

from access.models import Scope
from audit.models import AuditEvent
from distribution.models import Repo, Revision
from tests.support.flows import SHARD, publish_undispatched, published_tiny_llama
from tests.support.personas import person, sign_in, token_for
from tests.support.servers import wait_until
from verification import tasks
from verification.core.report import REQUIRED_CHECKS
from verification.core.tiny_llama import write_tiny_llama
from verification.models import CheckResult, VerificationRun
from verification.services import claim_file, run_checks_stage, start_checks

pytestmark = pytest.mark.django_db
PAGE = "/acme/tiny/revisions/"
RELEASED = "distribution:revision:released"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def repo():
    return Repo.objects.create(org="acme", name="tiny")


@pytest.fixture
def paula(repo):
    return person("paula", publishes=[repo])


@pytest.fixture
def publisher(paula):
    """Paula's browser, signed in past her second factor."""
    return sign_in(Client(), paula)


def checked_revision(repo, number: int, *, state=Revision.State.VERIFIED, **fields) -> Revision:
    """A revision whose publish run recorded every required check as passed, as a worker leaves a verified one."""
    revision = Revision.objects.create(
        repo=repo, commit=f"{number:040x}", state=state, storage_backend="local", **fields
    )
    run = VerificationRun.objects.create(revision=revision, ok=True, finished_at=timezone.now())
    CheckResult.objects.bulk_create(
        CheckResult(revision=revision, run=run, name=name, status="pass", code="Fine", message="passed")
        for name in REQUIRED_CHECKS
    )
    return revision


def card(page: str, revision) -> str:
    """The revision's card on the publishing page, up to the next card (or the pager, or the script)."""
    start = page.index(f'id="revision-{revision.commit}"')
    ends = [page.find(marker, start) for marker in ('<div class="card', '<nav class="pager"', "<script>")]
    return page[start : min(end for end in ends if end != -1)]


def progress_url(revision) -> str:
    return f"/api/v1/repos/{revision.repo.repo_id}/revisions/{revision.commit}/progress"


def test_the_repo_page_links_the_publishing_page_for_its_publishers_only(repo, publisher, client):
    assert PAGE in publisher.get("/acme/tiny").content.decode()
    client.force_login(person("alice"))
    assert PAGE not in client.get("/acme/tiny").content.decode()


def test_revisions_are_listed_newest_first_a_page_at_a_time(repo, publisher):
    for number in range(1, 24):
        checked_revision(repo, number)
    first = publisher.get(PAGE).content.decode()
    commits = [f"{number:040x}" for number in range(23, 0, -1)]
    shown = [commit for commit in commits if f'id="revision-{commit}"' in first]
    assert shown == commits[:20]
    assert [first.index(f'id="revision-{commit}"') for commit in shown] == sorted(
        first.index(f'id="revision-{commit}"') for commit in shown
    )
    assert "page 1 of 2" in first and 'href="?page=2"' in first
    second = publisher.get(PAGE, {"page": 2}).content.decode()
    assert [commit for commit in commits if f'id="revision-{commit}"' in second] == commits[20:]


def test_a_failed_revision_shows_which_check_failed_and_why(repo, paula, publisher, tmp_path):
    checkpoint = write_tiny_llama(tmp_path / "ckpt")
    shard = checkpoint / SHARD
    shard.write_bytes(shard.read_bytes() + b"trailing")
    revision = publish_undispatched(checkpoint, "acme/tiny")
    run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    shown = card(publisher.get(PAGE).content.decode(), revision)
    assert "<code>MetadataIncompleteBuffer</code>" in shown and f"<td>{SHARD}</td>" in shown
    failed = revision.checks.get(code="MetadataIncompleteBuffer")
    assert failed.message in shown and '<span class="state failed">Failed</span>' in shown
    assert 'name="tag"' not in shown and "data-progress" not in shown  # nothing to release, nothing to follow
    progress = publisher.get(progress_url(revision)).json()
    assert progress["state"] == "failed" and progress["settled"] and not progress["releasable"]
    assert {"status": "fail", "code": "MetadataIncompleteBuffer", "file": SHARD} in [
        {key: check[key] for key in ("status", "code", "file")} for check in progress["checks"]
    ]


def test_a_file_being_checked_names_its_worker_and_the_page_follows_it(repo, publisher, tmp_path):
    revision = publish_undispatched(write_tiny_llama(tmp_path / "ckpt"), "acme/tiny")
    waiting = publisher.get(progress_url(revision)).json()
    assert (waiting["state"], waiting["files"]["list"], waiting["settled"]) == ("uploaded", [], False)
    paths = start_checks(revision.pk)
    claim_file(revision.pk, SHARD, "verify-7@gpu-host")
    progress = publisher.get(progress_url(revision)).json()
    assert (progress["state"], progress["stage"]) == ("verifying", "checks")
    assert progress["stage_words"] == "checking its files"
    rows = {row["path"]: row for row in progress["files"]["list"]}
    assert set(rows) == set(paths)
    assert (rows[SHARD]["state"], rows[SHARD]["worker"], rows[SHARD]["claims"]) == ("checking", "verify-7@gpu-host", 1)
    assert progress["files"]["counts"] == {"pending": len(paths) - 1, "checking": 1, "done": 0}
    assert progress["step"] != waiting["step"]
    page = publisher.get(PAGE).content.decode()
    assert f'data-progress="{progress_url(revision)}"' in page and "verify-7@gpu-host" in page
    assert f'data-step="{progress["step"]}"' in page and 'http-equiv="refresh"' in page  # inside <noscript>


def test_a_state_added_later_is_shown_by_its_name_and_followed(repo, publisher):
    revision = checked_revision(repo, 1)
    Revision.objects.filter(pk=revision.pk).update(state="quarantined", verification_stage="")
    page = publisher.get(PAGE)
    assert page.status_code == 200
    assert '<span class="state quarantined">quarantined</span>' in page.content.decode()
    assert f'data-progress="{progress_url(revision)}"' in page.content.decode()
    progress = publisher.get(progress_url(revision)).json()
    assert (progress["state_label"], progress["settled"], progress["releasable"]) == ("quarantined", False, False)


def test_an_incomplete_revision_says_what_it_waits_for_and_is_not_followed(repo, publisher):
    revision = checked_revision(repo, 1)
    waiting = "waiting for model-00002-of-00002.safetensors, which its index names: commit them to finish it"
    Revision.objects.filter(pk=revision.pk).update(state=Revision.State.INCOMPLETE, failure_reason=waiting)
    page = publisher.get(PAGE).content.decode()
    assert '<span class="state incomplete">Incomplete</span>' in page
    assert f'<p class="msg">{waiting}</p>' in page
    assert f'data-progress="{progress_url(revision)}"' not in page
    progress = publisher.get(progress_url(revision)).json()
    assert (progress["state_label"], progress["settled"], progress["releasable"]) == ("Incomplete", True, False)


def test_a_publisher_releases_a_verified_revision_with_a_tag(repo, paula, publisher, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", release=False, verify_here=True)
    page = publisher.get(PAGE).content.decode()
    assert f'action="/acme/tiny/revisions/{revision.commit}/release"' in page
    answer = publisher.post(
        f"/acme/tiny/revisions/{revision.commit}/release",
        {"tag": "v1.0", "page": "1"},
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT="Firefox/140",
    )
    assert answer.status_code == 302 and answer["Location"] == f"{PAGE}?page=1#revision-{revision.commit}"
    revision.refresh_from_db()
    assert (revision.state, revision.tag) == (Revision.State.RELEASED, "v1.0")
    event = AuditEvent.objects.get(tag=RELEASED)
    assert (event.ip, event.user_agent) == ("203.0.113.9", "Firefox/140")  # from where, as every page action
    assert (event.actor_username, event.data["commit"], event.data["revision_tag"]) == (
        "paula",
        revision.commit,
        "v1.0",
    )
    after = publisher.get(answer["Location"]).content.decode()
    assert "Released acme/tiny@" in after and "as v1.0" in after
    assert 'name="tag"' not in after  # released: nothing more to release


@pytest.mark.parametrize("tag", ["main", "two words", "a" * 40, "x" * 65, "v1.0"])
def test_a_tag_that_cannot_name_the_revision_is_refused_and_nothing_changes(repo, publisher, tag):
    checked_revision(repo, 1, state=Revision.State.RELEASED, tag="v1.0", released_at=timezone.now())
    revision = checked_revision(repo, 2)
    answer = publisher.post(f"/acme/tiny/revisions/{revision.commit}/release", {"tag": tag})
    assert answer.status_code == 400
    shown = card(answer.content.decode(), revision)
    expected = "already has a revision tagged v1.0" if tag == "v1.0" else "cannot name a revision"
    assert 'role="alert"' in shown and expected in shown and f'value="{tag}"' in shown  # kept, to correct
    revision.refresh_from_db()
    assert (revision.state, revision.tag) == (Revision.State.VERIFIED, "")
    assert not AuditEvent.objects.filter(tag=RELEASED).exists()


@pytest.mark.parametrize("state", [Revision.State.VERIFYING, Revision.State.FAILED, Revision.State.DRAFT, "incomplete"])
def test_only_a_verified_revision_is_released(repo, publisher, state):
    revision = checked_revision(repo, 1, state=state, failure_reason="a shard is short" if state == "failed" else "")
    answer = publisher.post(f"/acme/tiny/revisions/{revision.commit}/release", {"tag": "v1.0"})
    assert answer.status_code == 400
    refusal = answer.content.decode()
    assert "only a verified revision can be released" in refusal or "is a draft" in refusal
    revision.refresh_from_db()
    assert (revision.state, revision.tag) == (state, "")
    assert not AuditEvent.objects.filter(tag=RELEASED).exists()


def test_a_release_without_the_csrf_token_is_refused(repo, paula):
    revision = checked_revision(repo, 1)
    browser = sign_in(Client(enforce_csrf_checks=True), paula)
    assert browser.post(f"/acme/tiny/revisions/{revision.commit}/release", {"tag": "v1.0"}).status_code == 403
    revision.refresh_from_db()
    assert (revision.state, revision.tag) == (Revision.State.VERIFIED, "")


def test_only_a_publisher_of_the_repo_releases_from_the_page(repo, client):
    revision = checked_revision(repo, 1)
    other = Repo.objects.create(org="acme", name="other")
    for someone in (person("bob", reviews=[repo]), person("olga", publishes=[other]), person("alice")):
        sign_in(client, someone)
        assert client.post(f"/acme/tiny/revisions/{revision.commit}/release", {"tag": "v1"}).status_code == 403
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFIED


def test_a_publisher_must_pass_the_second_factor_and_a_token_needs_the_publish_scope(repo, paula):
    revision = checked_revision(repo, 1)
    unproven = sign_in(Client(), paula, second_factor=False)
    assert unproven.get(PAGE)["Location"] == "/accounts/2fa/totp/activate/"
    refused = unproven.post(f"/acme/tiny/revisions/{revision.commit}/release", {"tag": "v1"})
    assert refused.status_code == 302 and "/accounts/2fa/" in refused["Location"]
    assert unproven.get(progress_url(revision)).status_code == 403
    by_token = Client().get(
        progress_url(revision), HTTP_AUTHORIZATION=f"Bearer {token_for(paula, scopes=[Scope.PUBLISH])}"
    )
    assert by_token.status_code == 200 and by_token.json()["commit"] == revision.commit
    reader = Client().get(progress_url(revision), HTTP_AUTHORIZATION=f"Bearer {token_for(paula, scopes=[Scope.READ])}")
    assert reader.status_code == 403 and "publish scope" in reader.json()["error"]
    revision.refresh_from_db()
    assert revision.state == Revision.State.VERIFIED


def test_the_progress_of_an_unknown_revision_is_not_found(repo, publisher):
    missing = publisher.get(f"/api/v1/repos/acme/tiny/revisions/{'e' * 40}/progress")
    assert missing.status_code == 404 and missing["X-Error-Code"] == "RevisionNotFound"


@pytest.mark.django_db(transaction=True)
def test_the_progress_follows_a_verification_on_a_real_worker(worker, tmp_path):
    repo = Repo.objects.create(org="acme", name="tiny")
    publisher = sign_in(Client(), person("paula", publishes=[repo]))
    revision = publish_undispatched(write_tiny_llama(tmp_path / "ckpt", shards=2), "acme/tiny")
    paths = start_checks(revision.pk)  # what verify_revision does first; the files go to the worker below

    def progress() -> dict:
        answer = publisher.get(progress_url(revision))
        assert answer.status_code == 200
        return answer.json()

    before = progress()
    assert before["files"]["counts"] == {"pending": len(paths), "checking": 0, "done": 0}
    tasks.check_file.delay(revision.pk, SHARD)

    one_done = wait_until(
        lambda: (answer := progress())["files"]["counts"]["done"] == 1 and answer,
        timeout=60,
        interval=0.2,
        what="the worker to check one shard",
    )
    shard = next(row for row in one_done["files"]["list"] if row["path"] == SHARD)
    assert shard["state"] == "done" and shard["worker"].startswith("test-") and len(shard["sha256"]) == 64
    assert (one_done["state"], one_done["stage"], one_done["settled"]) == ("verifying", "checks", False)
    for path in paths:
        if path != SHARD:
            tasks.check_file.delay(revision.pk, path)
    verified = wait_until(
        lambda: (answer := progress())["settled"] and answer, timeout=120, interval=0.2, what="the verdict"
    )
    assert (verified["state"], verified["stage"], verified["releasable"]) == ("verified", "", True)
    assert all(row["state"] == "done" for row in verified["files"]["list"])
    assert {check["name"] for check in verified["checks"]} >= set(REQUIRED_CHECKS)
    assert all(check["status"] != "fail" for check in verified["checks"])
    assert verified["smoke"]["device"] and verified["smoke"]["greedy_next_tokens"]
    shown = card(publisher.get(PAGE).content.decode(), revision)
    assert "Smoke inference" in shown and 'name="tag"' in shown and "data-progress" not in shown
