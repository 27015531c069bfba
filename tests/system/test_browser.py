"""A person in a real browser (Debian's Chromium driven by Playwright): sign up, open the emailed
link, ask for access; a reviewer accepts in the queue; the applicant sees the decision and how to
download. A publisher follows a revision's checks and releases it from the publishing page.
Screenshots of each page go to tests/artifacts/ (ignored by git)."""

import json
import re
from pathlib import Path

import pytest
from django.core import mail

from access.models import AccessRequest, GatingPolicy, Grant
from audit.models import AuditEvent
from distribution.models import Repo, Revision
from tests.support.flows import publish_undispatched, published_tiny_llama
from tests.support.personas import enrol_second_factor, person, totp_code
from verification.core.tiny_llama import write_tiny_llama
from verification.services import check_stored_file, finish_checks, run_smoke_stage, start_checks

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).parent.parent / "artifacts"


def snap(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_up_verify_ask_get_accepted_and_see_how_to_download(browser, live_server, tmp_path):
    card = "# Tiny LLaMA\n\nA **test** model.\n\n<script>alert(1)</script>\n"
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True, extra_files={"README.md": card})
    GatingPolicy.objects.update_or_create(
        repo=revision.repo,
        defaults={
            "license_text": "Research use only.",
            "license_version": "2",
            "form_fields": [
                {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
                {"name": "country", "label": "Country", "type": "country", "required": True},
            ],
        },
    )
    bob_secret = enrol_second_factor(person("bob", reviews=[revision.repo]))  # his authenticator app
    applicant = browser.new_page()

    applicant.goto(f"{live_server.url}/accounts/signup/")
    applicant.fill("input[name=email]", "alice@lab.example")
    applicant.fill("input[name=username]", "alice")
    applicant.fill("input[name=password1]", "a long and unusual passphrase 42")
    applicant.fill("input[name=password2]", "a long and unusual passphrase 42")
    snap(applicant, "01-sign-up")
    applicant.click("form button[type=submit]")
    applicant.wait_for_load_state()
    snap(applicant, "02-check-your-email")
    assert "alice@lab.example" in mail.outbox[-1].to
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+", mail.outbox[-1].body).group(0)

    applicant.goto(link)
    snap(applicant, "03-confirm-email")
    applicant.click("form button[type=submit]")
    applicant.wait_for_load_state()

    applicant.goto(f"{live_server.url}/acme/tiny")
    snap(applicant, "04-repo-page")
    applicant.fill("#id_affiliation", "Lab of Examples")
    applicant.select_option("#id_country", "NO")
    applicant.check("#accept_license")
    snap(applicant, "05-access-form")
    applicant.click("#access-form button")
    applicant.wait_for_load_state()
    snap(applicant, "06-pending")
    assert "awaits a reviewer" in applicant.content()
    assert AccessRequest.objects.get().fields == {"affiliation": "Lab of Examples", "country": "NO"}

    reviewer = browser.new_context().new_page()
    reviewer.goto(f"{live_server.url}/accounts/login/")
    reviewer.fill("input[name=login]", "bob")
    reviewer.fill("input[name=password]", "bob-password")
    reviewer.click("form button[type=submit]")
    reviewer.wait_for_load_state()
    reviewer.fill("input[name=code]", totp_code(bob_secret))  # reviewers sign in with a second factor
    reviewer.click("form button[type=submit]")
    reviewer.wait_for_load_state()
    reviewer.goto(f"{live_server.url}/review/")
    assert "Lab of Examples" in reviewer.content() and "lab.example" in reviewer.content()
    reviewer.check("input[name=request]")
    snap(reviewer, "07-review-queue")
    reviewer.click("button[value=accepted]")
    reviewer.wait_for_load_state()
    snap(reviewer, "08-accepted")
    assert Grant.active().filter(user__username="alice").exists()

    applicant.goto(f"{live_server.url}/acme/tiny")
    snap(applicant, "09-download-instructions")
    content = applicant.content()
    assert "You may download this model" in content and "snapshot_download" in content
    assert "model_signing verify key" in content and "/api/v1/signing-key.pem" in content
    # The signed-in browser fetches a file (the session authorizes it, as a token would).
    fetched = applicant.request.get(f"{live_server.url}/acme/tiny/resolve/main/config.json")
    assert fetched.ok and json.loads(fetched.body())["model_type"] == "llama"

    reviewer.goto(f"{live_server.url}/audit/downloads/?repo=acme/tiny")
    snap(reviewer, "11-who-obtained")
    row = reviewer.locator("table tr", has_text="alice")
    assert row.count() == 1 and revision.commit[:12] in row.inner_text()
    export = reviewer.get_attribute("a:text('CSV')", "href")
    assert export.startswith("/audit/downloads.csv?") and "repo=acme%2Ftiny" in export
    applicant.goto(f"{live_server.url}/account/")
    snap(applicant, "12-account-downloads")
    own = applicant.request.get(f"{live_server.url}/account/downloads.json")
    assert [(r["username"], r["repo"]) for r in json.loads(own.body())] == [("alice", "acme/tiny")]
    applicant.goto(f"{live_server.url}/requests/")
    snap(applicant, "10-my-requests")
    assert "accepted" in applicant.content()
    assert any("accepted" in message.subject for message in mail.outbox if "alice@lab.example" in message.to)

    # What model hubs show, as the recipient sees it: the card (no script ran), files, checks.
    dialogs = []
    applicant.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    applicant.goto(f"{live_server.url}/acme/tiny")
    assert applicant.locator("#model-card h1").inner_text() == "Tiny LLaMA" and dialogs == []
    assert applicant.locator("#files tr").count() == revision.files.count() + 1  # and the heading row
    assert applicant.locator("#verification").get_by_text("Smoke inference").is_visible()
    snap(applicant, "13-repo-page")
    reviewer.goto(f"{live_server.url}/review/?state=all")
    assert reviewer.locator("#activity svg rect").count() == 60  # 30 days, two bars each
    snap(reviewer, "14-review-queue-activity")
    missing = applicant.goto(f"{live_server.url}/acme/no-such-model")
    assert missing.status == 404 and applicant.locator("#not-found").is_visible()
    snap(applicant, "15-not-found")


def test_a_publisher_follows_the_checks_and_releases_from_the_page(browser, live_server, tmp_path):
    repo = Repo.objects.create(org="acme", name="tiny")
    paula_secret = enrol_second_factor(person("paula", publishes=[repo]))
    revision = publish_undispatched(write_tiny_llama(tmp_path / "checkpoint", shards=2), "acme/tiny")
    first, *rest = start_checks(revision.pk)
    check_stored_file(revision.pk, first, worker="verify-1@journey")
    publisher = browser.new_page()
    publisher.goto(f"{live_server.url}/accounts/login/")
    publisher.fill("input[name=login]", "paula")
    publisher.fill("input[name=password]", "paula-password")
    publisher.click("form button[type=submit]")
    publisher.wait_for_load_state()
    publisher.fill("input[name=code]", totp_code(paula_secret))  # publishers sign in with a second factor too
    publisher.click("form button[type=submit]")
    publisher.wait_for_load_state()

    publisher.goto(f"{live_server.url}/acme/tiny")
    publisher.click("#publishing")
    publisher.wait_for_load_state()
    card = publisher.locator(f"#revision-{revision.commit}")
    assert card.locator(f"tr[data-file='{first}']").inner_text().split("\t")[2:] == ["checked", "verify-1@journey"]
    assert card.locator("tr[data-file] .state.pending").count() == len(rest)
    assert "checking its files" in card.inner_text()
    snap(publisher, "16-publisher-checks-under-way")

    # The rest of the verification, as the workers would do it: the open page follows it without a reload.
    for path in rest:
        check_stored_file(revision.pk, path, worker="verify-2@journey")
    finish_checks(revision.pk)
    run_smoke_stage(revision.pk)
    publisher.wait_for_selector(f"#revision-{revision.commit} form.release", timeout=30_000)
    card = publisher.locator(f"#revision-{revision.commit}")
    assert card.locator(".state.verified").inner_text() == "Verified"
    assert "Smoke inference" in card.inner_text() and "none failed" in card.inner_text()
    snap(publisher, "17-publisher-verified")

    card.locator("input[name=tag]").fill("two words")
    card.locator("form.release button").click()
    publisher.wait_for_load_state()
    assert "cannot name a revision" in publisher.locator(f"#revision-{revision.commit} .refused").inner_text()
    publisher.locator(f"#revision-{revision.commit} input[name=tag]").fill("v1.0")
    publisher.locator(f"#revision-{revision.commit} form.release button").click()
    publisher.wait_for_load_state()
    assert "Released acme/tiny@" in publisher.content()
    assert publisher.locator(f"#revision-{revision.commit} .state.released").inner_text() == "Released"
    snap(publisher, "18-publisher-released")
    revision.refresh_from_db()
    assert (revision.state, revision.tag) == (Revision.State.RELEASED, "v1.0")
    released = AuditEvent.objects.get(tag="distribution:revision:released")
    assert released.actor_username == "paula"
