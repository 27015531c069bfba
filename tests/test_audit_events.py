"""Each step a person or the system takes leaves one event in the audit chain, written where the change
is made; a daily job erases where old requests came from without breaking the chain."""

import io
import json
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from access.models import AccessRequest, GatingPolicy, Grant
from access.services import decide, grant_access, record_expired_grants
from distribution.models import DownloadEvent, Repo, Revision
from distribution.publishing import release_revision
from distribution.storage import get_storage
from portal import retention
from portal.audit import first_break, record
from portal.models import AuditEvent
from tests.support import servers
from tests.support.commands import manage
from tests.support.flows import flip_one_bit, http, publish, published_tiny_llama
from tests.support.personas import person, token_for
from verification.services import run_checks_stage, run_smoke_stage
from verification.tiny_llama import write_tiny_llama
from workers import tasks

pytestmark = pytest.mark.django_db
SHARD = "model-00001-of-00002.safetensors"
AGENT = "audit-test/1.0"
GUNICORN = ("--workers=3", "--threads=2", "--no-control-socket")  # several processes append to one chain
CURL = ("curl", "-sSfL", "-o", "/dev/null", "-w", "%{http_code}")
RESOLVE = f"acme/tiny/resolve/main/{SHARD}"


def events(tag: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tag=tag).order_by("sequence"))


def only_event(tag: str) -> AuditEvent:
    found = events(tag)
    assert len(found) == 1, f"{len(found)} events tagged {tag}"
    return found[0]


@pytest.fixture
def chain_checked():
    """Every test here ends with the chain whole: the new events are appended like any other."""
    yield
    assert first_break() is None


# --- Accounts -------------------------------------------------------------------------------------


def test_signing_up_and_opening_the_link_record_the_account_and_the_verified_address(chain_checked):
    browser = Client(HTTP_USER_AGENT=AGENT)
    response = browser.post(
        "/accounts/signup/",
        {
            "email": "erin@lab.example",
            "username": "erin",
            "password1": "a long and unusual passphrase 42",
            "password2": "a long and unusual passphrase 42",
        },
    )
    assert response.status_code == 302
    created = only_event("access:account:created")
    assert (created.actor_username, created.subject_username) == ("erin", "erin")
    assert created.data == {"via": "signup", "email": "erin@lab.example"}
    assert (created.ip, created.user_agent) == ("127.0.0.1", AGENT)
    assert not events("access:email:verified")

    link = re.search(r"https?://\S+(/accounts/confirm-email/\S+)", mail.outbox[-1].body).group(1)
    assert Client(HTTP_USER_AGENT=AGENT).post(link).status_code == 302
    verified = only_event("access:email:verified")
    assert (verified.actor_username, verified.subject_username) == ("erin", "erin")
    assert verified.data == {"via": "allauth", "email": "erin@lab.example"}
    assert verified.user_agent == AGENT


def test_create_account_records_the_account_and_its_verified_address_once(chain_checked):
    call_command("create_account", "frank", "--email", "frank@lab.example", "--verified", stdout=io.StringIO())
    out = io.StringIO()
    call_command("create_account", "gina", "--email", "gina@lab.example", "--print-token", stdout=out)
    created = events("access:account:created")
    assert [(e.subject_username, e.actor_username, e.data["via"]) for e in created] == [
        ("frank", "", "create_account"),
        ("gina", "", "create_account"),
    ]
    verified = only_event("access:email:verified")
    assert verified.subject_username == "frank"
    assert verified.data == {"via": "create_account", "email": "frank@lab.example"}
    token = only_event("access:token:created")  # the printed token, and no token for frank
    assert token.subject_username == "gina" and token.data["hint"] in out.getvalue()


@pytest.mark.parametrize("login", ["alice", "alice@example.org", "nobody"])
def test_a_failed_login_records_the_name_tried_and_never_the_password(login, chain_checked):
    person("alice")
    password = "correct-horse-battery-guess"
    response = Client(HTTP_USER_AGENT=AGENT).post("/accounts/login/", {"login": login, "password": password})
    assert response.status_code == 200  # the form again, with an error
    failed = only_event("access:login:failed")
    if login == "nobody":  # perhaps a password in the wrong box: only a digest, the same for the same guess
        assert set(failed.data) == {"unknown_name_digest"} and "nobody" not in json.dumps(failed.data)
        Client().post("/accounts/login/", {"login": login, "password": password})
        again = events("access:login:failed")[-1]
        assert again.data == failed.data
    else:
        assert failed.data == {"username": login}
    assert failed.subject_username == ("" if login == "nobody" else "alice")
    assert failed.actor_username == "" and failed.user_agent == AGENT
    stored = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert password not in stored and "********" not in stored


def test_a_good_login_records_no_failure():
    person("alice")
    browser = Client()
    browser.post("/accounts/login/", {"login": "alice", "password": "alice-password"})
    assert browser.session.get("_auth_user_id")
    assert not events("access:login:failed")


# --- Access requests and grants -------------------------------------------------------------------


@pytest.fixture
def repo():
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo, reapply_cooldown_days=0)
    return repo


def ask(token: str):
    return Client().post(
        "/api/v1/access-requests/",
        data=json.dumps({"repo": "acme/tiny", "accept_license": True}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_asking_again_after_a_rejection_is_a_reapplication_not_a_new_submission(repo, chain_checked):
    alice = person("alice")
    token = token_for(alice)
    assert ask(token).status_code == 201
    first = AccessRequest.objects.get()
    decide(first, status=AccessRequest.State.REJECTED, reviewer=person("bob", reviews=[repo]), reason="not yet")
    assert ask(token).status_code == 201
    assert len(events("access:request:submitted")) == 1
    reapplied = only_event("access:request:reapplied")
    assert (reapplied.actor_username, reapplied.subject_username, reapplied.repo_id) == ("alice", "alice", "acme/tiny")
    assert reapplied.data == {"license_version": "1", "previous_request": first.pk, "previous_state": "rejected"}
    assert reapplied.ip == "127.0.0.1"


def test_a_first_request_is_a_submission_only(repo):
    assert ask(token_for(person("alice"))).status_code == 201
    assert len(events("access:request:submitted")) == 1
    assert not events("access:request:reapplied")


def test_the_expiry_job_records_each_expired_grant_once(repo, chain_checked):
    now = timezone.now()
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    expiring = grant_access(alice, repo, granted_by=None, expires_at=now + timedelta(hours=1))
    grant_access(bob, repo, granted_by=None, expires_at=now + timedelta(days=30))
    revoked_first = grant_access(carol, repo, granted_by=None, expires_at=now + timedelta(hours=1))
    Grant.objects.filter(pk=expiring.pk).update(expires_at=now - timedelta(minutes=5))  # its hour went by
    Grant.objects.filter(pk=revoked_first.pk).update(
        revoked_at=now - timedelta(minutes=10), expires_at=now - timedelta(minutes=5)
    )

    assert tasks.record_expired_grants() == 1
    assert tasks.record_expired_grants() == 0
    expired = only_event("access:grant:expired")
    assert (expired.actor_username, expired.subject_username, expired.repo_id) == ("", "alice", "acme/tiny")
    assert expired.data == {"grant": expiring.pk, "expires_at": (now - timedelta(minutes=5)).isoformat()}

    # Extended by staff after it expired, then expired again: a second expiry, recorded once too.
    Grant.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    assert tasks.record_expired_grants() == 0
    two_hours_later = timezone.now() + timedelta(hours=2)
    assert record_expired_grants(now=two_hours_later) == 1
    assert record_expired_grants(now=two_hours_later) == 0
    assert len(events("access:grant:expired")) == 2


def test_the_periodic_jobs_are_scheduled():
    scheduled = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled["workers.tasks.record_expired_grants"] <= 3600
    assert scheduled["workers.tasks.erase_old_origins"] == 24 * 3600


def test_staff_editing_a_gating_policy_records_a_policy_change(repo, chain_checked):
    staff = Client(HTTP_USER_AGENT=AGENT)
    staff.force_login(person("carol", staff=True))
    policy = GatingPolicy.objects.get(repo=repo)
    response = staff.post(
        f"/admin/access/gatingpolicy/{policy.pk}/change/",
        {
            "repo": repo.pk,
            "mode": "rules",
            "form_fields": "[]",
            "license_text": "Research use only.",
            "license_version": "2",
            "acceptable_use": "",
            "reapply_cooldown_days": "0",
            "rules-TOTAL_FORMS": "1",
            "rules-INITIAL_FORMS": "0",
            "rules-MIN_NUM_FORMS": "0",
            "rules-MAX_NUM_FORMS": "1000",
            "rules-0-position": "0",
            "rules-0-kind": "email_domain_in",
            "rules-0-values": '["lab.example"]',
            "rules-0-action": "accept",
            "rules-0-reason": "",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    changed = only_event("access:policy:changed")
    assert (changed.actor_username, changed.repo_id, changed.user_agent) == ("carol", "acme/tiny", AGENT)
    assert changed.data["action"] == "changed"
    assert {"mode", "license_text", "license_version", "rules"} <= set(changed.data["changed"])
    assert not AuditEvent.objects.filter(tag__startswith="admin:gatingpolicy").exists()
    assert GatingPolicy.objects.get().rules.count() == 1


# --- Links, downloads and revisions ---------------------------------------------------------------


@pytest.fixture
def release(tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, token_for(alice)


def test_asking_for_a_manifest_issues_a_link_and_asking_again_renews_it(release, chain_checked):
    revision, token = release
    url = "/api/v1/repos/acme/tiny/revisions/main/manifest"
    grantee = Client(HTTP_USER_AGENT=AGENT)
    assert grantee.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    issued = only_event("distribution:ticket:issued")
    first = revision.tickets.get()
    assert (issued.actor_username, issued.subject_username, issued.repo_id) == ("alice", "alice", "acme/tiny")
    assert issued.data["ticket"] == first.pk and issued.data["commit"] == revision.commit
    assert issued.data["max_uses"] == first.max_uses and issued.user_agent == AGENT

    assert grantee.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    renewed = only_event("distribution:ticket:renewed")
    assert renewed.data["renews"] == first.pk
    assert renewed.data["ticket"] == revision.tickets.exclude(pk=first.pk).get().pk
    assert len(events("distribution:ticket:issued")) == 1


def test_the_hub_redirect_records_the_short_lived_ticket_it_issues_but_not_its_value(release, chain_checked):
    revision, token = release
    answer = Client(HTTP_USER_AGENT=AGENT).get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 302
    issued = only_event("distribution:ticket:issued")
    assert (issued.subject_username, issued.data["channel"], issued.data["file"]) == ("alice", "hf-redirect", SHARD)
    assert issued.data["commit"] == revision.commit and issued.user_agent == AGENT
    ticket = answer["Location"].split("/")[2]
    assert ticket not in json.dumps(issued.data)


def test_each_download_served_is_recorded_with_its_download_event(release, chain_checked):
    revision, token = release
    grantee = Client(HTTP_USER_AGENT=AGENT)
    response = grantee.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 302
    ticket_url = response["Location"]
    assert grantee.head(ticket_url).status_code == 200  # a HEAD serves no bytes and records nothing
    assert not events("distribution:download:served")
    response = grantee.get(ticket_url, HTTP_RANGE="bytes=0-9")
    assert response.status_code == 206
    b"".join(response.streaming_content)
    served = only_event("distribution:download:served")
    download = DownloadEvent.objects.get()
    assert (served.actor_username, served.subject_username, served.repo_id) == ("alice", "alice", "acme/tiny")
    assert served.data == {
        "download_event": download.pk,
        "commit": revision.commit,
        "path": SHARD,
        "status": 206,
        "range": "bytes=0-9",
        "channel": "local",
    }
    assert (served.ip, served.user_agent) == (download.ip, download.user_agent) == ("127.0.0.1", AGENT)


@pytest.mark.django_db(transaction=True)
def test_downloads_served_by_several_processes_at_once_leave_one_event_each_and_one_chain(worker_env, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    port = servers.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", f"--bind=127.0.0.1:{port}", *GUNICORN],
        cwd=servers.REPO_ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # stop_process ends the whole group: the arbiter and its workers
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert server.poll() is None, server.stderr.read()
            try:
                return http("GET", f"{base}/health")[0] == 200
            except OSError:
                return False

        servers.wait_until(answers, timeout=60, what="gunicorn to answer")
        # Each curl is a process of its own: the resolve redirect, then the ranged download it leads to.
        clients = [
            subprocess.Popen(
                [*CURL, "-H", f"Authorization: Bearer {token}", "-r", f"{offset}-{offset + 9}", f"{base}/{RESOLVE}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for offset in range(30)
        ]
        statuses = [client.communicate(timeout=120)[0] for client in clients]
    finally:
        servers.stop_process(server)
    assert statuses == ["206"] * 30
    served = events("distribution:download:served")
    assert len(served) == DownloadEvent.objects.count() == 30
    assert {event.data["download_event"] for event in served} == set(DownloadEvent.objects.values_list("pk", flat=True))
    assert first_break() is None


def test_a_checkpoint_leaves_one_event_per_step_from_publish_to_withdrawal(tmp_path, chain_checked):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    tags = ["distribution:revision:published", "verification:revision:verified", "distribution:revision:released"]
    recorded = list(AuditEvent.objects.filter(tag__in=tags).order_by("sequence"))
    assert [event.tag for event in recorded] == tags
    assert all(event.repo_id == "acme/tiny" and event.data["commit"] == revision.commit for event in recorded)
    published = [path for path in checkpoint.rglob("*") if path.is_file()]
    assert recorded[0].data["files"] == len(published)
    assert recorded[0].data["bytes"] == sum(path.stat().st_size for path in published)
    assert recorded[0].data["storage"] == "local"

    # Steps taken again move nothing and record nothing.
    assert run_smoke_stage(revision.pk) is None
    release_revision(revision)
    assert not revision.move(Revision.State.VERIFIED)
    assert [len(events(tag)) for tag in tags] == [1, 1, 1]

    stored = get_storage("local").path(f"{revision.storage_prefix}/{SHARD}")
    flip_one_bit(stored)
    with pytest.raises(CommandError, match="failed re-verification"):
        call_command("reverify", "acme/tiny", stdout=io.StringIO())
    withdrawn = only_event("distribution:revision:withdrawn")
    assert withdrawn.data["commit"] == revision.commit and SHARD in withdrawn.data["reason"]
    assert not events("verification:revision:failed")


def test_a_release_by_a_named_person_is_theirs(tmp_path, chain_checked):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True, release=False)
    carol = person("carol", staff=True)
    release_revision(revision, actor=carol)
    assert only_event("distribution:revision:released").actor_username == "carol"


def test_a_checkpoint_that_fails_its_checks_records_the_failure_once(tmp_path, chain_checked):
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=2)
    (checkpoint / SHARD).write_bytes(b"not a safetensors file")
    revision = publish(checkpoint, "acme/broken", "local")
    run_checks_stage(revision.pk)
    revision.refresh_from_db()
    assert revision.state == Revision.State.FAILED
    failed = only_event("verification:revision:failed")
    assert failed.repo_id == "acme/broken" and failed.actor_username == ""
    assert failed.data["commit"] == revision.commit and failed.data["reason"] == revision.failure_reason
    assert not revision.move(Revision.State.FAILED, failure_reason="again")
    assert len(events("verification:revision:failed")) == 1
    assert not events("verification:revision:verified")


# --- Retention ------------------------------------------------------------------------------------


def download_event(origin: dict) -> DownloadEvent:
    return DownloadEvent.objects.create(
        username="alice", repo_id="acme/tiny", commit="0" * 40, path=SHARD, channel="local", status=200, **origin
    )


def test_retention_erases_where_old_events_came_from_and_the_chain_stays_whole():
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT=AGENT, REMOTE_ADDR="203.0.113.9")
    origin = {"ip": "203.0.113.9", "user_agent": AGENT}
    old_audit = [record("access:token:created", request=request, number=n) for n in range(3)]
    old_download = download_event(origin)
    boundary = timezone.now()
    new_audit = record("access:token:created", request=request, number=3)
    new_download = download_event(origin)
    assert new_audit.created_at > boundary and new_download.created_at > boundary
    # The retention period after the boundary: the first events are past it, the last ones are not.
    erased = retention.erase_old_origins(now=boundary + timedelta(days=settings.AUDIT_ORIGIN_RETENTION_DAYS))
    assert erased == {"portal.AuditEvent": 3, "distribution.DownloadEvent": 1}

    for event in AuditEvent.objects.filter(pk__in=[e.pk for e in old_audit]):
        assert (event.ip, event.user_agent) == (None, "") and event.origin_digest
    old_download.refresh_from_db()
    assert (old_download.ip, old_download.user_agent) == (None, "")
    new_audit.refresh_from_db()
    new_download.refresh_from_db()
    assert (new_audit.ip, new_audit.user_agent) == (new_download.ip, new_download.user_agent) == tuple(origin.values())
    assert first_break() is None
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "intact (4 events)" in out.getvalue()


def test_a_retention_under_a_day_stops_start_up(tmp_path):
    result = manage("check", env={"AUDIT_ORIGIN_RETENTION_DAYS": "0"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "AUDIT_ORIGIN_RETENTION_DAYS=0 is below the minimum of 1" in result.stderr


def test_retention_run_by_the_job_keeps_recent_events_and_erases_nothing_twice():
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_USER_AGENT=AGENT, REMOTE_ADDR="203.0.113.9")
    recent = record("access:token:created", request=request)
    old = download_event({"ip": "203.0.113.9", "user_agent": AGENT})
    # Download events are not chained: dating one back is how a row from months ago looks.
    DownloadEvent.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=settings.AUDIT_ORIGIN_RETENTION_DAYS + 1)
    )
    assert tasks.erase_old_origins() == {"portal.AuditEvent": 0, "distribution.DownloadEvent": 1}
    assert tasks.erase_old_origins() == {"portal.AuditEvent": 0, "distribution.DownloadEvent": 0}
    recent.refresh_from_db()
    assert recent.ip == "203.0.113.9" and recent.user_agent == AGENT
    assert first_break() is None


def test_a_tag_given_at_release_is_in_the_release_event_and_a_later_tag_is_its_own_event(tmp_path, chain_checked):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", release=False, verify_here=True)
    call_command("release", "acme/tiny", "--tag", "v1.0", stdout=io.StringIO())
    released = only_event("distribution:revision:released")
    assert released.data == {"commit": revision.commit, "revision_tag": "v1.0"}
    call_command("release", "acme/tiny", "--revision", revision.commit, "--tag", "v1", stdout=io.StringIO())
    retagged = only_event("distribution:revision:tagged")
    assert retagged.data == {"commit": revision.commit, "revision_tag": "v1"}
    revision.refresh_from_db()
    assert revision.tag == "v1"
