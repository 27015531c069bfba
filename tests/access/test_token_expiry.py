"""A token stops working when it expires, on every path a request can take, and says so; the account
page asks for the expiry, shows it, and shows when each token was last used."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from access.models import ApiToken, Scope, hash_token
from distribution.models import Repo
from tests.support.flows import SHARD
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db(transaction=True)
EXPIRED = re.compile(r"this token expired at \d{4}-\d\d-\d\d \d\d:\d\d UTC: create a new one on your account page")


def expire(raw: str, ago=timedelta(seconds=1)) -> None:
    """What the passing of time does: no signal, no audit event, no cache told."""
    ApiToken.objects.filter(digest=hash_token(raw)).update(expires_at=timezone.now() - ago)


def test_an_expired_token_is_refused_saying_when_it_expired(client, live_server):
    alice = person("alice")
    token = token_for(alice, expires_at=timezone.now() + timedelta(days=1))
    assert HfApi(endpoint=live_server.url, token=token).whoami()["name"] == "alice"
    expire(token)
    with pytest.raises(HfHubHTTPError) as raised:
        HfApi(endpoint=live_server.url, token=token).whoami()
    assert raised.value.response.status_code == 401
    assert EXPIRED.search(raised.value.response.headers["X-Error-Message"])
    for path in ("/api/v1/access-requests/", "/api/models/acme/tiny/revision/main", "/api/v1/me/downloads/"):
        refused = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert refused.status_code == 401 and EXPIRED.search(refused.content.decode()), path


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_a_redirect_ticket_stops_with_the_token_it_was_asked_with(client, release, ending):
    _, token = release
    redirect = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert redirect.status_code == 302
    if ending == "expired":
        expire(token)
    else:
        ApiToken.objects.filter(digest=hash_token(token)).update(revoked_at=timezone.now())
    refused = client.get(redirect["Location"])
    assert refused.status_code == 403 and "revoked or expired" in refused["X-Error-Message"]


def test_last_use_is_recorded_and_shown_on_the_account_page(client):
    alice = person("alice")
    token = token_for(alice, "laptop")
    stored = ApiToken.objects.get(user=alice)
    assert stored.last_used_at is None
    client.force_login(alice)
    assert re.search(r"laptop.*?never</td>\s*<td><form", client.get("/account/").content.decode(), re.S)
    assert client.get("/api/whoami-v2", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None
    first = stored.last_used_at
    client.get("/api/whoami-v2", HTTP_AUTHORIZATION=f"Bearer {token}")
    stored.refresh_from_db()
    assert stored.last_used_at == first  # at most one write a minute
    assert first.strftime("%Y-%m-%d %H:%M") in client.get("/account/").content.decode()


def test_the_account_page_makes_a_token_with_the_chosen_scopes_expiry_and_repos(client):
    repo = Repo.objects.create(org="acme", name="tiny")
    Repo.objects.create(org="acme", name="other")
    bob = person("bob", reviews=[repo])
    client.force_login(bob)
    form = client.get("/account/").content.decode()
    assert re.search(r'value="read"[^>]*checked', form) and re.search(r'<option value="90" selected>', form)
    page = client.post(
        "/account/",
        {
            "action": "create-token",
            "name": "ci",
            "scopes": ["read", "review"],
            "expires_in_days": "7",
            "repos": [repo.pk],
        },
    ).content.decode()
    raw = re.search(r'<code id="new-token">(wg_[^<]+)</code>', page).group(1)
    token = ApiToken.objects.get(digest=hash_token(raw))
    assert token.scopes == ["read", "review"] and not token.all_repos and list(token.repos.all()) == [repo]
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    row = re.search(r"<tr><td>ci</td>.*?</tr>", client.get("/account/").content.decode(), re.S).group(0)
    assert "read, review" in row and "acme/tiny" in row and token.expires_at.strftime("%Y-%m-%d %H:%M") in row


def test_the_account_page_offers_only_scopes_the_account_can_use(client):
    alice = person("alice")
    client.force_login(alice)
    page = client.get("/account/").content.decode()
    assert 'value="read"' in page and not any(f'value="{s}"' in page for s in ("review", "publish", "admin"))
    refused = client.post("/account/", {"action": "create-token", "name": "x", "scopes": ["admin"]})
    assert refused.status_code == 400 and "admin is not one of the available choices" in refused.content.decode()
    nothing = client.post("/account/", {"action": "create-token", "name": "x"})
    assert nothing.status_code == 400 and "choose at least one scope" in nothing.content.decode()
    assert not ApiToken.objects.exists()
    carol = person("carol", staff=True)
    client.force_login(carol)
    page = client.get("/account/").content.decode()
    assert all(f'value="{scope}"' in page for scope in Scope.values)
