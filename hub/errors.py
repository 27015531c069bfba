"""Hub-style errors: the client turns `X-Error-Code` into its exceptions (GatedRepoError,
RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) and shows `X-Error-Message`."""

from django.http import JsonResponse


def hf_error(status: int, message: str, code: str | None = None, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    response["X-Error-Message"] = message
    if code:
        response["X-Error-Code"] = code
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response
