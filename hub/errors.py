"""Hub-style errors: the client turns `X-Error-Code` into its exceptions (GatedRepoError,
RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) and shows `X-Error-Message`."""

import logging

from django.http import JsonResponse

log = logging.getLogger(__name__)


def hf_error(status: int, message: str, code: str | None = None, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    response["X-Error-Message"] = message
    if code:
        response["X-Error-Code"] = code
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


class Refusal(Exception):
    """A request refused for a reason its caller can act on: `message` is what they are shown, `status` the
    HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


class Unavailable(Exception):
    """A request the portal cannot answer until an operator acts (a key or a file missing on this host):
    answered 503 with `message`, which says what the operator must do; `detail` goes to the log only."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.message, self.detail = message, detail


class UnavailableMiddleware:
    """One place that turns Unavailable, from any view, into a 503 and an error line for the operator."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, Unavailable):
            return None
        log.error("%s %s: 503, %s (%s)", request.method, request.path, exception.message, exception.detail or "-")
        # No Retry-After: the Hub client and curl --retry wait what it says before each retry (five times 300 s
        # was a 25-minute hang before the message); their own backoff retries a passing fault within seconds.
        return hf_error(503, exception.message)
