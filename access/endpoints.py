"""The wrapper of every Hugging Face-compatible endpoint: who is calling, how often, and refusals in the Hub's shape."""

import functools

from access.gate import AccessDenied
from access.tokens import InvalidToken, authenticate
from hub.errors import hf_error
from hub.rate_limits import caller_key, rate_limited


def hf_endpoint(view):
    """Authenticate the caller (token or session) into request.hf_user / request.hf_token; map refusals."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            request.hf_user, request.hf_token = authenticate(request)
        except InvalidToken as error:
            return hf_error(401, f"Invalid credentials in Authorization header: {error}")
        return limited_view(request, *args, **kwargs)

    @rate_limited(lambda request, *args, **kwargs: caller_key(request))
    def limited_view(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except AccessDenied as denied:
            return hf_error(denied.status, denied.message, denied.code, **denied.headers)

    return wrapper
