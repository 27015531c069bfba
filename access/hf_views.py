"""The Hub's user-access-request API, so `HfApi(endpoint=...)` can list, accept, reject and grant."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from access.endpoints import hf_endpoint
from access.gate import SecondFactorRequired, check_second_factor, find_repo, needs_grant, permit_review
from access.models import AccessRequest, Grant, User
from access.second_factor import WHY
from access.services import RequestRefused, decide, grant_access
from hub.bodies import json_object
from hub.errors import hf_error


def iso(moment) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_hub_request(request: AccessRequest) -> dict:
    entry = {
        "requestId": str(request.pk),
        "user": {
            "user": request.user.get_username(),
            "fullname": request.user.get_full_name() or request.user.get_username(),
            "email": request.user.email,
            "type": "user",
        },
        "status": request.state,
        "timestamp": iso(request.created_at),
        "fields": request.fields or {},
    }
    if request.state == AccessRequest.State.REJECTED and request.rejection_reason:
        entry["rejectionReason"] = request.rejection_reason
    return entry


def reviewed_repo(request, org, name):
    """The repo, when the caller may review it (through a token with the review scope); an error response
    otherwise."""
    if request.hf_user is None:
        return None, hf_error(401, "Invalid credentials in Authorization header: send a reviewer's token")
    if request.hf_token is None:  # a browser session: the review queue's requirement holds here too
        try:
            check_second_factor(request)
        except SecondFactorRequired:
            return None, hf_error(403, f"{WHY} This session has not passed yours: send a reviewer's token instead.")
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    permit_review(request.hf_user, repo, request.hf_token)
    if not needs_grant(repo):
        return None, hf_error(400, f"{repo.repo_id} is not gated.")
    return repo, None


def json_body(request) -> dict:
    if request.content_type != "application/json":
        raise RequestRefused(f"send the body as JSON (Content-Type: application/json), not {request.content_type}", 415)
    try:
        return json_object(request.body)
    except ValueError as error:
        raise RequestRefused(str(error)) from None


def text(body: dict, name: str) -> str:
    """A string field of the body ("" when absent); anything else is refused, naming the field."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestRefused(f"{name} must be a string, not {type(value).__name__}")
    return value


@require_GET
@hf_endpoint
def list_requests(request, org, name, state):
    repo, error = reviewed_repo(request, org, name)
    if error:
        return error
    requests = AccessRequest.objects.filter(repo=repo, state=state).select_related("user").order_by("created_at")
    # Only the newest request of each person counts, as on the Hub where a user has one request per repo.
    latest = {}
    for access_request in requests:
        latest[access_request.user_id] = access_request
    return JsonResponse([as_hub_request(r) for r in latest.values()], safe=False)


@csrf_exempt
@require_POST
@hf_endpoint
def handle_request(request, org, name):
    repo, error = reviewed_repo(request, org, name)
    if error:
        return error
    try:
        body = json_body(request)
        status = body.get("status")
        if status not in AccessRequest.State.values:
            raise RequestRefused("status must be one of accepted, rejected, pending")
        username, reason = text(body, "user"), text(body, "rejectionReason")
        user = User.objects.filter(username=username).first()
        if user is None:
            return hf_error(404, f"User {username!r} not found.")
        access_request = AccessRequest.objects.filter(user=user, repo=repo).order_by("-created_at", "-id").first()
        if access_request is None:
            return hf_error(404, f"{user.get_username()} has not asked for access to {repo.repo_id}.")
        if access_request.state == status:
            return hf_error(400, f"The access request of {user.get_username()} is already {status}.")
        decide(
            access_request,
            status=status,
            reviewer=request.hf_user,
            reason=reason,
            request=request,
        )
    except RequestRefused as refused:
        return hf_error(refused.status, refused.message)
    return JsonResponse({})


@csrf_exempt
@require_POST
@hf_endpoint
def grant(request, org, name):
    repo, error = reviewed_repo(request, org, name)
    if error:
        return error
    try:
        username = text(json_body(request), "user")
    except RequestRefused as refused:
        return hf_error(refused.status, refused.message)
    user = User.objects.filter(username=username).first()
    if user is None:
        return hf_error(404, f"User {username!r} not found.")
    if Grant.active().filter(user=user, repo=repo).exists():
        return hf_error(400, f"{user.get_username()} already has access to {repo.repo_id}.")
    grant_access(user, repo, granted_by=request.hf_user, request=request)
    return JsonResponse({"user": user.get_username(), "status": "accepted"})
