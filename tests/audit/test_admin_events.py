"""Audit events of changes staff make in the admin: a gating policy, a grant."""

import pytest
from django.test import Client

from access.models import GatingPolicy
from audit.models import AuditEvent
from distribution.models import Repo
from tests.support.audit import AGENT, only_event
from tests.support.personas import person, sign_in

pytestmark = pytest.mark.django_db


def test_staff_editing_a_gating_policy_records_a_policy_change(repo, chain_checked):
    staff = Client(HTTP_USER_AGENT=AGENT)
    sign_in(staff, person("carol", staff=True))
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


def test_staff_changes_in_the_admin_are_audited():
    from django.utils import timezone

    from access.models import Grant
    from access.services import grant_access
    from audit.models import AuditEvent

    repo = Repo.objects.create(org="acme", name="tiny")
    grant = grant_access(person("alice"), repo, granted_by=None)
    staff = Client()
    sign_in(staff, person("carol", staff=True))
    response = staff.post(
        f"/admin/access/grant/{grant.pk}/change/",
        {
            "user": grant.user_id,
            "repo": repo.pk,
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "expires_at_0": "2030-01-01",
            "expires_at_1": "00:00:00",
            "revoked_at_0": "",
            "revoked_at_1": "",
            "license_version": "1",
        },
    )
    assert response.status_code == 302, response.content[:500]
    event = AuditEvent.objects.get(tag="admin:grant:changed")
    assert (
        event.actor_username == "carol" and event.subject_username == "alice" and "expires_at" in event.data["changed"]
    )
    assert Grant.objects.get().expires_at.year == 2030
    assert timezone.now().year < 2030


def test_staff_naming_a_publisher_in_the_admin_is_audited():
    from access import gate
    from access.models import Publisher

    repo = Repo.objects.create(org="acme", name="tiny")
    paula = person("paula")
    staff = sign_in(Client(), person("carol", staff=True))
    response = staff.post("/admin/access/publisher/add/", {"user": paula.pk, "repo": repo.pk})
    assert response.status_code == 302, response.content[:500]
    event = AuditEvent.objects.get(tag="admin:publisher:created")
    assert (event.actor_username, event.subject_username, event.repo_id) == ("carol", "paula", "acme/tiny")
    assert Publisher.objects.filter(user=paula, repo=repo).exists() and gate.may_publish(paula, repo)


def test_staff_deleting_an_account_in_the_admin_is_audited(chain_checked):
    from access.models import User

    alice = person("alice")
    staff = sign_in(Client(HTTP_USER_AGENT=AGENT), person("carol", staff=True))
    response = staff.post(f"/admin/access/user/{alice.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content[:500]
    deleted = only_event("admin:user:deleted")
    assert (deleted.actor_username, deleted.actor_id, deleted.subject_username) == ("carol", staff_id("carol"), "alice")
    assert deleted.data["object"] == "alice" and not User.objects.filter(username="alice").exists()


def test_staff_deleting_their_own_account_among_others_keeps_every_event_naming_them(chain_checked):
    """The accounts go first and their events after (see AuditedAdmin.deleted_with_events): carol's own events
    still name her, their link to her account gone with it, as for any account deleted later."""
    from access.models import User

    alice, carol = person("alice"), person("carol", staff=True)
    staff = sign_in(Client(), carol)
    response = staff.post(
        "/admin/access/user/", {"action": "delete_selected", "_selected_action": [alice.pk, carol.pk], "post": "yes"}
    )
    assert response.status_code == 302, response.content[:500]
    events = AuditEvent.objects.filter(tag="admin:user:deleted").order_by("sequence")
    assert [(e.actor_username, e.actor_id, e.subject_username) for e in events] == [
        ("carol", None, "alice"),
        ("carol", None, "carol"),
    ]
    assert not User.objects.filter(username__in=["alice", "carol"]).exists()


def staff_id(username: str) -> int | None:
    from access.models import User

    return User.objects.filter(username=username).values_list("pk", flat=True).first()
