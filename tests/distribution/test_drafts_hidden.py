"""A draft (a publish whose files are not all known to be stored) is invisible: not verified, not listed,
not served, not released, to anyone, staff included."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from access.services import grant_access
from distribution.models import Revision
from tests.support.personas import person, token_for
from tests.support.publishing import refused_draft
from verification.core.tiny_llama import write_tiny_llama
from verification.services import run_checks_stage, stalled_work

pytestmark = pytest.mark.django_db


@pytest.fixture
def draft(tmp_path):
    return refused_draft(write_tiny_llama(tmp_path / "ckpt"), "acme/unfinished")


@pytest.mark.django_db(transaction=True)  # stalled_work closes old connections, as its periodic job does
def test_verification_never_claims_a_draft_nor_requeues_it(draft):
    Revision.objects.filter(pk=draft.pk).update(created_at=timezone.now() - timezone.timedelta(days=1))
    assert run_checks_stage(draft.pk) is None
    assert draft.pk not in [work.revision.pk for work in stalled_work()]
    draft.refresh_from_db()
    assert draft.state == Revision.State.DRAFT and not draft.runs.exists()


@pytest.mark.parametrize("who", ["staff", "grantee"])
def test_the_hub_api_and_download_links_answer_a_draft_as_not_found(client, draft, who):
    user = person(who, staff=who == "staff")
    grant_access(user, draft.repo, granted_by=None)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token_for(user)}"}
    for url in (
        f"/api/models/acme/unfinished/revision/{draft.commit}",
        f"/api/models/acme/unfinished/tree/{draft.commit}",
        f"/acme/unfinished/resolve/{draft.commit}/config.json",
        f"/api/v1/repos/acme/unfinished/revisions/{draft.commit}/manifest",
    ):
        response = client.get(url, **auth)
        assert response.status_code == 404, url
        assert response.get("X-Error-Code") in (None, "RevisionNotFound"), url


def test_the_pages_show_a_draft_to_no_one(client, draft):
    reviewer = person("bob", reviews=[draft.repo], staff=True)
    client.force_login(reviewer)
    repo_page = client.get("/acme/unfinished")
    assert repo_page.status_code == 200 and draft.commit not in repo_page.content.decode()
    assert client.get(f"/acme/unfinished/revisions/{draft.commit}").status_code == 404


def test_the_release_command_never_releases_a_draft(draft):
    with pytest.raises(CommandError, match="no verified revision"):
        call_command("release", "acme/unfinished", stdout=io.StringIO())
    with pytest.raises(CommandError, match="is a draft: its files are still being published"):
        call_command("release", "acme/unfinished", "--revision", draft.commit[:12], stdout=io.StringIO())
    draft.refresh_from_db()
    assert draft.state == Revision.State.DRAFT
