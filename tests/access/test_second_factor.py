"""Staff and reviewers pass a second factor (an authenticator app, or a recovery code) before the
review queue, the admin and the audit pages, through the real sign-in, setup and code pages; a
session that never passed it is sent back for a code; applicants are never asked."""

import re

import pytest
from allauth.mfa.models import Authenticator
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils.http import urlencode

from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import Repo
from tests.support.personas import (
    enrol_second_factor,
    fresh_totp_code,
    person,
    recovery_codes,
    sign_in,
    totp_code,
    wrong_totp_code,
)

pytestmark = pytest.mark.django_db
SETUP = "/accounts/2fa/totp/activate/"
CODE_AT_SIGN_IN = "/accounts/2fa/authenticate/"
WHY = "Staff and reviewers sign in with a second factor"


@pytest.fixture
def repo():
    return Repo.objects.create(org="acme", name="tiny")


def log_in(client: Client, username: str):
    return client.post("/accounts/login/", {"login": username, "password": f"{username}-password"})


def code_page(path: str) -> str:
    return f"/accounts/2fa/reauthenticate/?{urlencode({'next': path})}"


@pytest.mark.django_db(transaction=True)  # allauth tells of a new factor once its transaction commits
def test_a_reviewer_without_a_second_factor_is_sent_to_set_one_up_and_comes_back(client, repo):
    bob = person("bob", reviews=[repo])
    assert log_in(client, "bob")["Location"] == "/"  # not enrolled: the password alone signs in
    for path in ("/review/", "/audit/downloads/", "/audit/downloads.csv"):
        refused = client.get(path)
        assert refused.status_code == 302 and refused["Location"] == SETUP, path
    client.get("/review/")

    # Setting one up asks for the password again first (allauth's rule for changing a second factor).
    confirm = client.get(SETUP, follow=True)
    assert confirm.redirect_chain[-1][0].startswith("/accounts/reauthenticate/")
    assert WHY in confirm.content.decode()
    back = client.post(confirm.redirect_chain[-1][0], {"password": "bob-password"})
    assert back["Location"] == SETUP
    setup = client.get(SETUP)  # each visit shows a new secret
    secret = re.search(r'id="authenticator_secret"[^>]*value="([A-Z2-7]+)"', setup.content.decode()).group(1)
    assert setup.context["totp_url"].endswith(f"secret={secret}&issuer=Weightgate")  # what the app shows it as

    assert client.post(SETUP, {"code": wrong_totp_code(secret)}).status_code == 200  # refused, form again
    assert not Authenticator.objects.filter(user=bob).exists()
    done = client.post(SETUP, {"code": totp_code(secret)})
    assert done["Location"] == "/accounts/2fa/recovery-codes/"
    codes_page = client.get(done["Location"]).content.decode()
    assert all(code in codes_page for code in recovery_codes(bob))
    assert 'href="/review/"' in codes_page  # the way back to the page that sent them here
    assert client.get("/review/").status_code == 200  # confirming the app proved it for this session
    assert client.get("/audit/downloads/").status_code == 200
    assert AuditEvent.objects.filter(tag=Tag.SECOND_FACTOR_ADDED, subject_username="bob").count() == 1


def test_an_enrolled_reviewer_whose_session_skipped_the_code_is_asked_for_it(client, repo):
    bob = person("bob", reviews=[repo])
    log_in(client, "bob")  # a session made before bob enrolled, in another browser
    secret = enrol_second_factor(bob)
    refused = client.get("/review/?state=all")
    assert refused.status_code == 302 and refused["Location"] == code_page("/review/?state=all")
    asked = client.get(refused["Location"])
    assert asked.status_code == 200 and WHY in asked.content.decode()

    wrong = client.post(refused["Location"], {"code": wrong_totp_code(secret)})
    assert wrong.status_code == 200 and client.get("/review/").status_code == 302
    assert AuditEvent.objects.filter(tag=Tag.LOGIN_FAILED, subject_username="bob").count() == 1
    right = client.post(refused["Location"], {"code": totp_code(secret)})
    assert right.status_code == 302 and right["Location"] == "/review/?state=all"
    assert client.get("/review/").status_code == 200


def test_a_session_signed_in_without_the_sign_in_pages_is_refused_too(repo):
    carol = person("carol", staff=True)
    enrol_second_factor(carol)
    client = sign_in(Client(), carol, second_factor=False)  # no record of any factor in the session
    for path in ("/admin/", "/admin/access/grant/", "/review/", "/audit/downloads.json"):
        assert client.get(path)["Location"] == code_page(path), path
    assert client.post("/review/", {"decision": "accepted", "request": "1"})["Location"] == code_page("/review/")
    assert client.post("/admin/logout/")["Location"] == "/"  # signing out never waits for a code


def test_signing_in_asks_an_enrolled_reviewer_for_a_code_and_takes_a_recovery_code_once(repo):
    bob = person("bob", reviews=[repo])
    secret = enrol_second_factor(bob)
    used = set()

    browser = Client()
    assert log_in(browser, "bob")["Location"] == CODE_AT_SIGN_IN
    assert browser.get("/review/")["Location"].startswith("/accounts/login/")  # not signed in yet
    assert browser.post(CODE_AT_SIGN_IN, {"code": wrong_totp_code(secret)}).status_code == 200
    assert browser.get("/review/")["Location"].startswith("/accounts/login/")
    assert browser.post(CODE_AT_SIGN_IN, {"code": fresh_totp_code(secret, used)})["Location"] == "/"
    assert browser.get("/review/").status_code == 200

    recovery = recovery_codes(bob)[0]
    laptop = Client()
    log_in(laptop, "bob")
    assert laptop.post(CODE_AT_SIGN_IN, {"code": recovery})["Location"] == "/"
    assert laptop.get("/review/").status_code == 200
    again = Client()
    log_in(again, "bob")
    assert again.post(CODE_AT_SIGN_IN, {"code": recovery}).status_code == 200  # each code signs in once
    assert again.get("/review/")["Location"].startswith("/accounts/login/")


def test_an_applicant_signs_in_with_the_password_and_is_never_asked_for_a_code(client, repo):
    alice = person("alice")
    assert log_in(client, "alice")["Location"] == "/"
    for path in ("/", "/acme/tiny", "/requests/", "/account/", "/account/downloads.json"):
        assert client.get(path).status_code == 200, path
    assert client.get("/review/").status_code == 403  # refused as before: she reviews nothing
    assert client.get("/audit/downloads/").status_code == 403
    assert not Authenticator.objects.filter(user=alice).exists()


def test_an_operator_resets_a_lost_device_and_the_next_staff_page_asks_for_a_new_one(repo):
    bob = person("bob", reviews=[repo])
    client = sign_in(Client(), bob)
    assert client.get("/review/").status_code == 200
    call_command("reset_second_factor", "bob")
    assert not Authenticator.objects.filter(user=bob).exists()  # the app and its recovery codes
    assert client.get("/review/")["Location"] == SETUP
    event = AuditEvent.objects.get(tag=Tag.SECOND_FACTOR_REMOVED)
    assert event.subject_username == "bob" and event.data["via"] == "reset_second_factor"
    with pytest.raises(CommandError, match="no second factor"):
        call_command("reset_second_factor", "bob")
    with pytest.raises(CommandError, match="no account"):
        call_command("reset_second_factor", "nobody")


def test_the_admin_lists_second_factors_without_their_secrets_and_deleting_one_resets_it(repo):
    bob = person("bob", reviews=[repo])
    secret = enrol_second_factor(bob)
    staff = sign_in(Client(), person("carol", staff=True))
    totp = Authenticator.objects.get(user=bob, type=Authenticator.Type.TOTP)
    page = staff.get(f"/admin/mfa/authenticator/{totp.pk}/change/").content.decode()
    assert "bob" in page and secret not in page
    assert staff.get("/admin/mfa/authenticator/add/").status_code == 403
    deleted = staff.post(f"/admin/mfa/authenticator/{totp.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not Authenticator.objects.filter(user=bob).exists()
    event = AuditEvent.objects.get(tag=Tag.SECOND_FACTOR_REMOVED)
    assert event.actor_id != event.subject_username == "bob" and event.data["via"] == "admin"


def test_a_reviewer_who_removes_their_app_is_asked_to_set_one_up_again(client, repo):
    bob = person("bob", reviews=[repo])
    sign_in(client, bob)
    client.post("/accounts/reauthenticate/", {"password": "bob-password"})  # allauth asks before a change
    assert client.post("/accounts/2fa/totp/deactivate/")["Location"] == "/accounts/2fa/"
    assert not Authenticator.objects.filter(user=bob).exists()
    assert AuditEvent.objects.filter(tag=Tag.SECOND_FACTOR_REMOVED, subject_username="bob").exists()
    assert client.get("/review/")["Location"] == SETUP
