"""What staff change in the admin about repos, accounts and revisions is audited; the download
records stay as written; a revision with downloads cannot be deleted; the admin withdraws."""

import pytest
from django.test import Client

from audit.models import AuditEvent
from distribution.models import DownloadEvent, Repo, Revision
from tests.support.downloads import body, ticket_url
from tests.support.personas import person, sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    client = Client()
    sign_in(client, person("carol", staff=True))
    return client


def test_making_a_repo_public_is_audited_with_the_new_value(staff):
    repo = Repo.objects.create(org="acme", name="tiny", private=True)
    answer = staff.post(
        f"/admin/distribution/repo/{repo.pk}/change/",
        {"org": "acme", "name": "tiny", "gated": "on", "description": "",
         "created_at_0": repo.created_at.strftime("%Y-%m-%d"), "created_at_1": repo.created_at.strftime("%H:%M:%S"),
         "link_lifetime_hours": "24", "link_max_uses": "100"},
    )  # fmt: skip
    assert answer.status_code == 302, answer.content[:1000]
    event = AuditEvent.objects.get(tag="admin:repo:changed")
    assert event.actor_username == "carol" and event.repo_id == "acme/tiny"
    assert "private" in event.data["changed"] and event.data["now"]["private"] is False


def test_making_someone_staff_is_audited_and_no_password_is_ever_logged(staff):
    mallory = person("mallory")
    answer = staff.post(
        f"/admin/access/user/{mallory.pk}/change/",
        {"username": "mallory", "email": "mallory@example.org", "is_active": "on", "is_staff": "on",
         "is_superuser": "on", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
         "password": mallory.password},
    )  # fmt: skip
    assert answer.status_code == 302, answer.content[:1000]
    event = AuditEvent.objects.get(tag="admin:user:changed")
    assert event.subject_username == "mallory"
    assert {"is_staff", "is_superuser"} <= set(event.data["changed"])
    assert event.data["now"]["is_staff"] is True and "password" not in event.data["now"]


def test_download_records_cannot_be_added_edited_or_deleted_in_the_admin(staff, setup):
    Client().get(ticket_url(Client(), setup))
    download = DownloadEvent.objects.get()
    assert staff.get("/admin/distribution/downloadevent/").status_code == 200  # they can be read
    assert staff.post(f"/admin/distribution/downloadevent/{download.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff.get("/admin/distribution/downloadevent/add/").status_code == 403
    assert DownloadEvent.objects.filter(pk=download.pk).exists()


def test_a_revision_with_downloads_is_not_deleted_and_its_record_fields_are_read_only(staff, setup):
    revision = setup["revision"]
    body(Client().get(ticket_url(Client(), setup)))
    assert staff.post(f"/admin/distribution/revision/{revision.pk}/delete/", {"post": "yes"}).status_code == 403
    answer = staff.post(
        "/admin/distribution/revision/",
        {"action": "delete_selected", "_selected_action": [revision.pk], "post": "yes"},
    )
    assert answer.status_code in (302, 403) and Revision.objects.filter(pk=revision.pk).exists()
    page = staff.get(f"/admin/distribution/revision/{revision.pk}/change/").content.decode()
    assert 'name="tag"' not in page and 'name="repo"' not in page and 'name="released_at_0"' not in page


def test_the_admin_withdraws_with_a_reason_and_downloads_stop(staff, setup, settings):
    settings.DOWNLOAD_DECISION_SECONDS = 0
    revision = setup["revision"]
    action = {"action": "withdraw", "_selected_action": [revision.pk]}
    asked = staff.post("/admin/distribution/revision/", action)
    assert asked.status_code == 200 and b"Withdraw 1 revision" in asked.content  # first: why?
    done = staff.post(
        "/admin/distribution/revision/", {**action, "reason": "leaked on a torrent"}, REMOTE_ADDR="198.51.100.7"
    )
    assert done.status_code == 302
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN
    event = AuditEvent.objects.get(tag="distribution:revision:withdrawn")
    assert event.actor_username == "carol" and event.data["reason"] == "leaked on a torrent"
    assert event.ip == "198.51.100.7"  # from where it was done
    refused = Client().get("/acme/tiny/resolve/main/config.json", HTTP_AUTHORIZATION=f"Bearer {setup['token']}")
    assert refused.status_code == 404
