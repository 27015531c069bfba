"""Withdrawing a released revision (`manage.py withdraw`) stops every way of downloading it at once:
the Hub API, the portal's own redirect tickets and download links already handed out, and the fast
path's remembered decisions."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEvent
from distribution.models import Revision
from tests.support.downloads import ticket_url
from tests.support.flows import SHARD

pytestmark = pytest.mark.django_db


def withdraw(revision, reason="the weights leaked") -> str:
    out = io.StringIO()
    call_command("withdraw", "acme/tiny", "--revision", revision.commit[:12], "--reason", reason, stdout=out)
    return out.getvalue()


def test_withdrawing_refuses_the_hub_api_and_every_link_handed_out_before(client, setup, settings):
    settings.DOWNLOAD_DECISION_SECONDS = 0  # nothing to wait for in this process
    revision, token = setup["revision"], setup["token"]
    ticket = ticket_url(client, setup)
    manifest = client.get(
        "/api/v1/repos/acme/tiny/revisions/main/manifest", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    link = next(entry["url"] for entry in manifest["files"] if entry["path"] == SHARD).split("testserver", 1)[1]
    assert client.get(link, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200  # it worked before

    said = withdraw(revision)
    assert "withdrawn acme/tiny@" in said and "presigned object-storage links" in said
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN and revision.failure_reason == "the weights leaked"
    event = AuditEvent.objects.get(tag="distribution:revision:withdrawn")
    assert event.data == {"commit": revision.commit, "reason": "the weights leaked"}

    again = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert again.status_code == 404 and again["X-Error-Code"] == "RevisionNotFound"
    assert client.get(ticket).status_code == 403
    refused = client.get(link, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 403 and "withdrawn" in refused["X-Error-Message"]


def test_a_remembered_decision_stops_with_the_withdrawal(client, s3_release, fast):
    revision, _, token = s3_release
    url = f"/acme/tiny/resolve/main/{SHARD}"
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 302
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 302  # from the decision
    withdraw(revision)
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 404


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_withdrawal_needs_a_reason(setup, reason):
    with pytest.raises(CommandError, match="give a reason"):
        withdraw(setup["revision"], reason)
    setup["revision"].refresh_from_db()
    assert setup["revision"].state == Revision.State.RELEASED


def test_only_a_released_revision_is_withdrawn(setup):
    withdraw(setup["revision"])
    with pytest.raises(CommandError, match="only a released revision is withdrawn"):
        withdraw(setup["revision"])
    assert AuditEvent.objects.filter(tag="distribution:revision:withdrawn").count() == 1
