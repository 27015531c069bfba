"""Sign-up, login and request submission are throttled; repeated login failures lock the account out."""

import json

import pytest
from django.test import Client

from access.models import GatingPolicy
from distribution.models import Repo
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


def login(client, username, password):
    return client.post("/accounts/login/", {"login": username, "password": password})


def test_repeated_login_failures_lock_the_account_even_for_the_right_password():
    person("alice")
    for _ in range(5):
        assert login(Client(), "alice", "wrong").status_code == 200  # the form again, with an error
    locked = login(Client(), "alice", "alice-password")
    assert locked.status_code in (200, 429)
    assert "_auth_user_id" not in locked.client.session
    assert "Too many" in locked.content.decode()


def test_staff_sign_in_to_the_admin_through_the_locked_out_account_pages():
    person("root", staff=True)
    client = Client()
    to_admin_login = client.get("/admin/access/grant/")
    assert to_admin_login.status_code == 302 and to_admin_login["Location"].startswith("/admin/login/")
    to_accounts = client.get(to_admin_login["Location"])
    assert to_accounts.status_code == 302
    assert to_accounts["Location"] == "/accounts/login/?next=/admin/access/grant/"
    # The admin's own form takes no password: a guess posted there signs nobody in and counts nowhere.
    posted = client.post("/admin/login/", {"username": "root", "password": "root-password"})
    assert posted.status_code == 302 and posted["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    for _ in range(5):
        login(Client(), "root", "wrong")
    assert "Too many" in login(client, "root", "root-password").content.decode()
    assert client.get("/admin/").status_code == 302  # still locked out of the admin


def test_a_good_password_signs_in_before_any_failure():
    person("alice")
    client = Client()
    login(client, "alice", "alice-password")
    assert client.session.get("_auth_user_id")


def test_sign_ups_from_one_address_are_throttled():
    statuses = []
    for number in range(12):
        response = Client().post(
            "/accounts/signup/",
            {
                "email": f"user{number}@example.org",
                "username": f"user{number}",
                "password1": "a long and unusual passphrase 42",
                "password2": "a long and unusual passphrase 42",
            },
        )
        statuses.append(response.status_code)
    assert statuses[:10] == [302] * 10
    assert statuses[10] == 429


def test_request_submission_is_throttled_per_account(settings):
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo)
    token = token_for(person("alice"))
    statuses = [
        Client()
        .post(
            "/api/v1/access-requests/",
            data=json.dumps({"repo": "acme/tiny", "accept_license": False}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        .status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [400] * 10 and statuses[10] == 429


def test_password_reset_requests_are_throttled_per_account():
    person("alice")
    statuses = [
        Client().post("/accounts/password/reset/", {"email": "alice@example.org"}).status_code for _ in range(4)
    ]
    assert statuses[:3] == [302] * 3 and statuses[3] == 429
