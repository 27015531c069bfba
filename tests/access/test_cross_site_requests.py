"""A page on another origin cannot make a signed-in reviewer's browser grant or accept access: the
Hub's access-request endpoints that change something take a bearer token, never the session.

In Chromium, for real: the attacking page is served from another port of the same host (another
origin, the same site, so the browser does attach the reviewer's session cookie to its form)."""

import functools
import http.server
import threading

import pytest
from django.conf import settings
from django.test import Client

from access.models import AccessRequest, Grant
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, sign_in, token_for

pytestmark = pytest.mark.django_db(transaction=True)

# A text/plain form whose body reads as JSON: {"user": "mallory", "pad": "="} and so on.
ATTACK = """<!doctype html><html><body>
<form id="f" method="POST" action="{action}" enctype="text/plain">
<input name='{{"user": "{user}", "status": "accepted", "pad": "' value='"}}'>
</form>
<script>document.getElementById("f").submit();</script>
</body></html>"""


@pytest.fixture
def attacker_site(tmp_path):
    """A static server on another port of the same host, serving the pages written into its folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://localhost:{server.server_address[1]}"
    server.shutdown()


def signed_in_page(browser, live_server, user):
    client = Client()
    sign_in(client, user)
    context = browser.new_context()
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
          "url": live_server.url}]
    )  # fmt: skip
    return context.new_page()


@pytest.mark.parametrize("endpoint", ["grant", "handle"])
def test_a_form_posted_from_another_origin_changes_nobodys_access(
    endpoint, browser, live_server, attacker_site, tmp_path
):
    revision, _ = published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    reviewer = person("rita", reviews=[revision.repo])
    mallory = person("mallory")
    if endpoint == "handle":
        AccessRequest.objects.create(user=mallory, repo=revision.repo, license_version="1")
    folder, origin = attacker_site
    action = f"{live_server.url}/api/models/acme/tiny/user-access-request/{endpoint}"
    (folder / "win.html").write_text(ATTACK.format(action=action, user="mallory"))

    page = signed_in_page(browser, live_server, reviewer)
    assert page.goto(f"{live_server.url}/review/").ok  # the session is live: the queue opens
    answer = {}
    page.on("response", lambda response: answer.setdefault(response.url, response.status))
    page.goto(f"{origin}/win.html")
    page.wait_for_url(action)
    assert answer[action] == 401
    assert not Grant.objects.filter(user=mallory).exists()
    assert not AccessRequest.objects.filter(user=mallory, state=AccessRequest.State.ACCEPTED).exists()


def test_the_reviewers_token_still_decides_as_the_hub_client_sends_it(live_server, tmp_path):
    from huggingface_hub import HfApi

    revision, _ = published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    reviewer = person("rita", reviews=[revision.repo])
    mallory = person("mallory")
    HfApi(endpoint=live_server.url, token=token_for(reviewer)).grant_access("acme/tiny", "mallory")
    assert Grant.objects.filter(user=mallory, revoked_at__isnull=True).exists()


def test_a_body_that_is_not_json_is_refused_with_415(tmp_path):
    revision, _ = published_tiny_llama(tmp_path / "release", "acme/tiny", verify_here=True)
    reviewer = person("rita", reviews=[revision.repo])
    person("mallory")
    answer = Client().post(
        "/api/models/acme/tiny/user-access-request/grant",
        data='{"user": "mallory"}',
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {token_for(reviewer)}",
    )
    assert answer.status_code == 415 and "Content-Type: application/json" in answer["X-Error-Message"]
    assert not Grant.objects.exists()
