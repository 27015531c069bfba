"""A token stops working when it expires, on every path a request can take, and says so; the account
page asks for the expiry, shows it, and shows when each token was last used."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from access.models import ApiToken, hash_token
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
