"""Audit events of accounts: sign-up, the verified address, accounts made by command, failed logins."""

import io
import json
import re

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client

from audit.models import AuditEvent
from tests.support.audit import AGENT, events, only_event
from tests.support.personas import person

pytestmark = pytest.mark.django_db


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
