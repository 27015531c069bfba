"""The wrapper of every Hugging Face-compatible endpoint: who is calling, how often, and refusals in the Hub's shape."""

import functools

from access.gate import AccessDenied
from access.tokens import InvalidToken, authenticate
from audit.connections import decided_read_only
from hub.errors import hf_error
from hub.rate_limits import caller_key, rate_limited

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def hf_endpoint(view=None, *, reads_only: bool = False):
    """Authenticate the caller (token or session) into request.hf_user / request.hf_token; map refusals.

    A request that changes something must carry a bearer token: a browser attaches its session to a
    form another site posts, never an Authorization header, so these endpoints need no CSRF token.
    `reads_only` marks a POST that only reads (the Hub's paths-info), open to whoever may read."""
    if view is None:
        return functools.partial(hf_endpoint, reads_only=reads_only)

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            request.hf_user, request.hf_token = decided_read_only(lambda: authenticate(request))
        except InvalidToken as error:
            return hf_error(401, f"Invalid credentials in Authorization header: {error}")
        if not reads_only and request.method not in SAFE_METHODS and request.hf_token is None:
            return hf_error(
                401,
                "This request changes access and must send a token (Authorization: Bearer <token>); "
                "a browser session is not accepted here. Decide in the review queue, /review/, instead.",
            )
        return limited_view(request, *args, **kwargs)

    @rate_limited(lambda request, *args, **kwargs: caller_key(request))
    def limited_view(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except AccessDenied as denied:
            return hf_error(denied.status, denied.message, denied.code, **denied.headers)

    return wrapper
