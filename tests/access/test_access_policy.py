"""The per-repo policy: form answers, rules, the re-apply cooldown, notifications, and the audit trail
each change leaves."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from access.models import AccessRequest, AccessRule, GatingPolicy, Grant, Reviewer
from access.services import send_review_digests
from audit.models import AuditEvent
from distribution.models import Repo
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db
FORM = [
    {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
    {"name": "use", "label": "Intended use", "type": "long_text", "required": True},
    {"name": "country", "label": "Country", "type": "country", "required": True},
    {"name": "sector", "type": "select", "options": ["academia", "industry"], "required": False},
    {"name": "start", "type": "date", "required": False},
    {"name": "newsletter", "type": "checkbox", "required": False},
]
GOOD = {"affiliation": "Lab", "use": "evaluation", "country": "fr", "sector": "academia", "start": "2026-12-01"}


@pytest.fixture
def repo():
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo, form_fields=FORM, license_text="Be kind.", license_version="1")
    return repo


def ask(client, user, fields, accept=True):
    return client.post(
        "/api/v1/access-requests/",
        content_type="application/json",
        data=json.dumps({"repo": "acme/tiny", "fields": fields, "accept_license": accept}),
        HTTP_AUTHORIZATION=f"Bearer {token_for(user)}",
    )


def handle(client, reviewer, body: dict, user_agent: str = ""):
    return client.post(
        "/api/models/acme/tiny/user-access-request/handle",
        content_type="application/json",
        data=json.dumps(body),
        HTTP_AUTHORIZATION=f"Bearer {token_for(reviewer)}",
        HTTP_USER_AGENT=user_agent,
    )


def test_answers_are_checked_against_the_form_and_kept_clean(client, repo):
    response = ask(client, person("alice"), GOOD)
    assert response.status_code == 201
    assert AccessRequest.objects.get().fields == {**GOOD, "country": "FR", "newsletter": False}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"affiliation": ""}, "affiliation", "Affiliation is required"),
        ({"country": "XX"}, "country", "ISO 3166"),
        ({"sector": "military"}, "sector", "must be one of: academia, industry"),
        ({"start": "next week"}, "start", "YYYY-MM-DD"),
        ({"use": "x" * 6000}, "use", "at most 5000"),
    ],
)
def test_bad_answers_are_refused_field_by_field(client, repo, change, field, message):
    response = ask(client, person("alice"), {**GOOD, **change})
    assert response.status_code == 400
    assert message in response.json()["fields"][field]
    assert not AccessRequest.objects.exists()


@pytest.fixture
def ruled(repo):
    policy = repo.policy
    policy.mode = GatingPolicy.Mode.RULES
    policy.save()
    rules = [
        ("country_in", ["KP"], "reject", "export rules forbid this country"),
        ("email_domain_in", ["lab.example"], "accept", ""),
        ("field_missing", ["sector"], "reject", "tell us your sector"),
    ]
    for position, (kind, values, action, reason) in enumerate(rules, start=1):
        AccessRule.objects.create(
            policy=policy, position=position, kind=kind, values=values, action=action, reason=reason
        )
    return repo


@pytest.mark.parametrize(
    ("email", "answers", "state", "reason"),
    [
        ("ann@lab.example", GOOD, "accepted", ""),
        ("ann@lab.example", {**GOOD, "country": "KP"}, "rejected", "export rules forbid this country"),
        ("ann@other.example", {**GOOD, "sector": ""}, "rejected", "tell us your sector"),
        ("ann@other.example", GOOD, "pending", ""),
    ],
)
def test_rules_decide_in_order_and_leave_the_rest_to_a_person(client, ruled, email, answers, state, reason):
    applicant = person("ann", email=email)
    response = ask(client, applicant, answers)
    assert response.status_code == 201
    assert (response.json()["state"], response.json()["rejection_reason"]) == (state, reason)
    assert Grant.active().filter(user=applicant).exists() == (state == "accepted")


def test_a_rejected_applicant_may_ask_again_after_the_cooldown(client, repo):
    alice = person("alice")
    bob = person("bob", reviews=[repo])
    ask(client, alice, GOOD)
    handle(client, bob, {"user": "alice", "status": "rejected", "rejectionReason": "too vague"})
    again = ask(client, alice, GOOD)
    assert again.status_code == 429 and "you may ask again from" in again.json()["detail"]
    AccessRequest.objects.update(decided_at=timezone.now() - timedelta(days=31))
    assert ask(client, alice, GOOD).status_code == 201
    assert list(AccessRequest.objects.order_by("id").values_list("state", flat=True)) == ["rejected", "pending"]


def test_reviewers_hear_of_new_requests_and_applicants_of_decisions(client, repo, django_capture_on_commit_callbacks):
    person("bob", reviews=[repo])
    carol = person("carol", reviews=[repo])
    Reviewer.objects.filter(user=carol).update(notify=Reviewer.Notify.DAILY)
    with django_capture_on_commit_callbacks(execute=True):
        ask(client, person("alice"), GOOD)
    assert [m.to for m in mail.outbox] == [["bob@example.org"]]
    assert "alice asks for access to acme/tiny" in mail.outbox[0].subject
    assert send_review_digests() == 1
    assert mail.outbox[-1].to == ["carol@example.org"] and "acme/tiny: alice" in mail.outbox[-1].body
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        handle(client, person("dave", reviews=[repo]), {"user": "alice", "status": "accepted"})
    assert mail.outbox[-1].to == ["alice@example.org"]
    assert "accepted" in mail.outbox[-1].subject and "snapshot_download" in mail.outbox[-1].body


def test_every_change_leaves_one_audit_event(client, repo):
    alice = person("alice")
    bob = person("bob", reviews=[repo])
    ask(client, alice, GOOD)
    handle(client, bob, {"user": "alice", "status": "accepted"}, user_agent="hf-cli-test")
    events = list(AuditEvent.objects.order_by("id").values_list("tag", "actor_username", "subject_username"))
    assert events == [("access:request:submitted", "alice", "alice"), ("access:request:accepted", "bob", "alice")]
    accepted = AuditEvent.objects.get(tag="access:request:accepted")
    assert accepted.repo_id == "acme/tiny" and accepted.ip == "127.0.0.1" and accepted.user_agent == "hf-cli-test"
    with pytest.raises(ValueError, match="append-only"):
        accepted.save()


def test_counts_per_repo_and_state_for_monitoring(client, repo):
    other = Repo.objects.create(org="acme", name="other")
    ask(client, person("alice"), GOOD)
    ask(client, person("erin"), GOOD)
    staff = token_for(person("carol", staff=True))
    counts = client.get("/api/v1/counts/", HTTP_AUTHORIZATION=f"Bearer {staff}").json()
    assert counts["acme/tiny"] == {"pending": 2, "accepted": 0, "rejected": 0}
    assert counts["acme/other"] == {"pending": 0, "accepted": 0, "rejected": 0}
    reviewer = token_for(person("bob", reviews=[other]))
    assert list(client.get("/api/v1/counts/", HTTP_AUTHORIZATION=f"Bearer {reviewer}").json()) == ["acme/other"]
    assert client.get("/api/v1/counts/", HTTP_AUTHORIZATION=f"Bearer {token_for(person('dave'))}").status_code == 403
