"""A staff member in a real browser (Debian's Chromium driven by Playwright) sets up the second factor
the first time the review queue asks for it, reading the secret off the page as an authenticator app
would and typing the code it computes; then signs in with the password and a code, with a recovery
code, and is refused with a wrong code. Screenshots go to tests/artifacts/ (ignored by git)."""

import pytest

from access.models import AccessRequest
from distribution.models import Repo
from tests.support.personas import fresh_totp_code, person, totp_code, wrong_totp_code
from tests.system.test_browser import snap

pytestmark = pytest.mark.django_db(transaction=True)
WHY = "Staff and reviewers sign in with a second factor"


def sign_in(page, url: str, next_path: str) -> None:
    page.goto(f"{url}/accounts/login/?next={next_path}")
    page.fill("input[name=login]", "carol")
    page.fill("input[name=password]", "carol-password")
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def give_code(page, code: str) -> None:
    page.fill("input[name=code]", code)
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def sign_out(page) -> None:
    page.click("header form button")
    page.wait_for_load_state()


def test_staff_set_up_an_app_then_sign_in_with_its_codes_or_a_recovery_code(browser, live_server):
    person("carol", staff=True)
    AccessRequest.objects.create(user=person("alice"), repo=Repo.objects.create(org="acme", name="tiny"))
    url = live_server.url
    page = browser.new_page()

    # The password alone signs her in, but the queue sends her to set up a second factor; changing
    # one asks for the password again first.
    sign_in(page, url, "/review/")
    assert "/accounts/reauthenticate/" in page.url and WHY in page.content()
    snap(page, "mfa-01-why-and-confirm-password")
    page.fill("input[name=password]", "carol-password")
    page.click("form button[type=submit]")
    page.wait_for_load_state()
    assert page.url.endswith("/accounts/2fa/totp/activate/")
    assert page.locator("img[src^='data:image/svg+xml']").count() == 1  # the QR code to scan
    snap(page, "mfa-02-set-up-the-app")
    secret = page.input_value("#authenticator_secret")
    used = {totp_code(secret)}
    give_code(page, totp_code(secret))

    assert page.url.endswith("/accounts/2fa/recovery-codes/")
    codes = page.input_value("#recovery_codes").split()
    assert len(codes) == 10
    snap(page, "mfa-03-recovery-codes")
    page.click("#continue")
    page.wait_for_load_state()
    assert page.url == f"{url}/review/" and "alice" in page.content()
    snap(page, "mfa-04-review-queue")

    # Next time: password, then a code from the app.
    sign_out(page)
    sign_in(page, url, "/admin/")
    assert page.url.startswith(f"{url}/accounts/2fa/authenticate/")
    snap(page, "mfa-05-code-at-sign-in")
    give_code(page, fresh_totp_code(secret, used))
    assert page.url == f"{url}/admin/" and "Site administration" in page.content()
    assert page.goto(f"{url}/audit/downloads/").ok and page.url == f"{url}/audit/downloads/"

    # A wrong code is refused; a recovery code works, once.
    sign_out(page)
    sign_in(page, url, "/review/")
    give_code(page, wrong_totp_code(secret))
    assert page.url.startswith(f"{url}/accounts/2fa/authenticate/") and "Incorrect code" in page.content()
    snap(page, "mfa-06-wrong-code")
    give_code(page, codes[0])  # the sign-in still waits for a code: she takes a recovery code
    assert page.url == f"{url}/review/" and "alice" in page.content()
    sign_out(page)
    sign_in(page, url, "/review/")
    give_code(page, codes[0])
    assert "Incorrect code" in page.content()
    assert page.goto(f"{url}/admin/").url.split("?")[0] != f"{url}/admin/"
