"""A per-token request rate limit for the download endpoints: fixed windows counted in the shared cache.

Answers past the limit are 429 with Retry-After, and every answer carries the IETF RateLimit and
RateLimit-Policy headers, which the Hugging Face client reads to wait before retrying.
"""

import functools
import time

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

POLICY = "downloads"


def count_request(bucket: str, timeout: int) -> int:
    """Add one to `bucket` and return the count; on Redis in one round trip, as it runs on every download."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        key = backend.make_and_validate_key(bucket)
        pipeline = backend._cache.get_client(key, write=True).pipeline(transaction=False)
        pipeline.set(key, 0, ex=timeout, nx=True)
        pipeline.incr(key)
        return pipeline.execute()[1]
    cache.add(bucket, 0, timeout=timeout)
    try:
        return cache.incr(bucket)
    except ValueError:  # expired between add and incr: this request opens a new window
        cache.set(bucket, 1, timeout=timeout)
        return 1


def take(key: str) -> tuple[bool, int, int]:
    """(allowed, remaining, seconds until the window resets) after counting one request for `key`."""
    limit, window = settings.DOWNLOAD_RATE_LIMIT
    now = time.time()
    bucket = f"ratelimit:{key}:{int(now // window)}"
    count = count_request(bucket, window + 1)
    reset = max(1, int(window - now % window))
    return count <= limit, max(0, limit - count), reset


def rate_limited(key_of):
    """Count each request under `key_of(request, *args, **kwargs)`; refuse with 429 past the limit."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            from portal.hf_protocol import hf_error

            limit, window = settings.DOWNLOAD_RATE_LIMIT
            allowed, remaining, reset = take(key_of(request, *args, **kwargs))
            if allowed:
                response = view(request, *args, **kwargs)
            else:
                response = hf_error(429, f"Too many requests: at most {limit} every {window} s. Retry in {reset} s.")
                response["Retry-After"] = str(reset)
            response["RateLimit-Policy"] = f'"fixed window";"{POLICY}";q={limit};w={window}'
            response["RateLimit"] = f'"{POLICY}";r={remaining};t={reset}'
            return response

        return wrapper

    return decorate


def caller_key(request) -> str:
    """The token if one was sent, else the account, else the address."""
    token = getattr(request, "hf_token", None)
    if token is not None:
        return f"token:{token.pk}"
    user = getattr(request, "hf_user", None) or getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"
