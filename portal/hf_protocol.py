"""What every Hugging Face-compatible endpoint shares: bearer authentication and Hub-style errors.

The client turns `X-Error-Code` into its exceptions (GatedRepoError, RepositoryNotFoundError,
RevisionNotFoundError, EntryNotFoundError) and shows `X-Error-Message` to the person.
"""

import functools

from django.http import JsonResponse

from access.gate import AccessDenied
from access.tokens import InvalidToken, authenticate
from portal.rate_limits import caller_key, rate_limited

# How a repo appears in URLs, and the download route that distribution.fast_path answers early.
REPO = r"(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
RESOLVE_ROUTE = rf"^{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"


def hf_error(status: int, message: str, code: str | None = None, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    response["X-Error-Message"] = message
    if code:
        response["X-Error-Code"] = code
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


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
