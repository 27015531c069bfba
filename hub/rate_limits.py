"""A per-token request rate limit for the download endpoints: fixed windows counted in the shared cache.

Answers past the limit are 429 with Retry-After, and every answer carries the IETF RateLimit and
RateLimit-Policy headers, which the Hugging Face client reads to wait before retrying.

Each process reserves a window's requests from the shared count a slice at a time and hands them
out locally, so a busy token costs one round trip per slice rather than per request. Every request
allowed holds a number within the limit, so all processes together never allow more than the limit;
a slice left unused when its window ends is simply lost.
"""

import functools
import threading
import time

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from hub.errors import hf_error

POLICY = "downloads"
MAX_SLICE = 64


def count_request(bucket: str, timeout: int, amount: int = 1) -> int:
    """Add `amount` to `bucket` and return the count; on Redis in one round trip."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        key = backend.make_and_validate_key(bucket)
        pipeline = backend._cache.get_client(key, write=True).pipeline(transaction=False)
        pipeline.set(key, 0, ex=timeout, nx=True)
        pipeline.incrby(key, amount)
        return pipeline.execute()[1]
    cache.add(bucket, 0, timeout=timeout)
    try:
        return cache.incr(bucket, amount)
    except ValueError:  # expired between add and incr: this request opens a new window
        cache.set(bucket, amount, timeout=timeout)
        return amount


def slice_size(limit: int) -> int:
    # Small limits are counted one by one, so a low limit stays exact whatever the number of processes.
    return max(1, min(MAX_SLICE, limit // 32))


class Reservations:
    """The request numbers this process reserved, per key, in the current window."""

    def __init__(self):
        self.lock = threading.Lock()
        self.slices: dict[str, tuple[int, int, int]] = {}  # key -> (window, next number, last number)

    def clear(self) -> None:
        """Forget the slices, as when the shared counts are reset (they were reserved from them)."""
        with self.lock:
            self.slices = {}

    def number(self, key: str, window_index: int, limit: int, timeout: int) -> int:
        """This request's number in the window; above `limit` means refused."""
        with self.lock:
            window, following, last = self.slices.get(key, (None, 1, 0))
            if window == window_index and following <= last:
                self.slices[key] = (window, following + 1, last)
                return following
        size = slice_size(limit)
        total = count_request(f"ratelimit:{key}:{window_index}", timeout, size)
        first = total - size + 1
        with self.lock:
            if len(self.slices) > 10_000:  # keys of past windows
                self.slices = {k: v for k, v in self.slices.items() if v[0] == window_index}
            self.slices[key] = (window_index, first + 1, min(total, limit))
        return first


reservations = Reservations()


def take(key: str) -> tuple[bool, int, int]:
    """(allowed, remaining, seconds until the window resets) after counting one request for `key`."""
    limit, window = settings.DOWNLOAD_RATE_LIMIT
    now = time.time()
    number = reservations.number(key, int(now // window), limit, window + 1)
    reset = max(1, int(window - now % window))
    return number <= limit, max(0, limit - number), reset


def with_limit_headers(response, remaining: int, reset: int):
    limit, window = settings.DOWNLOAD_RATE_LIMIT
    response["RateLimit-Policy"] = f'"fixed window";"{POLICY}";q={limit};w={window}'
    response["RateLimit"] = f'"{POLICY}";r={remaining};t={reset}'
    return response


def too_many_requests(reset: int):
    limit, window = settings.DOWNLOAD_RATE_LIMIT
    response = hf_error(429, f"Too many requests: at most {limit} every {window} s. Retry in {reset} s.")
    response["Retry-After"] = str(reset)
    return response


def rate_limited(key_of):
    """Count each request under `key_of(request, *args, **kwargs)`; refuse with 429 past the limit."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            allowed, remaining, reset = take(key_of(request, *args, **kwargs))
            response = view(request, *args, **kwargs) if allowed else too_many_requests(reset)
            return with_limit_headers(response, remaining, reset)

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
