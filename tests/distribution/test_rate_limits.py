"""A token past its download request rate is answered 429 with when to retry, counted in the shared cache."""

import pytest

from tests.support.downloads import early_in_a_window
from tests.support.flows import SHARD
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["file cache", "redis cache"])
def rate_limit_cache(request, settings):
    """The counters live in the shared cache: the embedded file cache, or Redis as in production (a
    server of the test's own: emptying it must not take the run's broker queues with it)."""
    if request.param == "redis cache":
        url = request.getfixturevalue("private_redis")
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    return request.param


def test_a_token_past_its_request_rate_gets_429_with_when_to_retry(client, setup, settings, rate_limit_cache):
    from huggingface_hub.utils import parse_ratelimit_headers

    settings.DOWNLOAD_RATE_LIMIT = (3, 60)
    early_in_a_window(60)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {setup['token']}"}
    answers = [client.head(f"/acme/tiny/resolve/{setup['revision'].commit}/{SHARD}", **auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert 1 <= int(refused["Retry-After"]) <= 60
    info = parse_ratelimit_headers(refused.headers)
    assert (info.resource_type, info.remaining, info.limit, info.window_seconds) == ("downloads", 0, 3, 60)
    assert parse_ratelimit_headers(answers[0].headers).remaining == 2
    other = token_for(person("bob"))  # another token has its own count
    assert client.head("/api/whoami-v2", HTTP_AUTHORIZATION=f"Bearer {other}").status_code != 429
