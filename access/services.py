"""Access requests and grants: every change goes through here."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from access.models import AccessRequest, GatingPolicy, Grant


class RequestRefused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def submit_request(user, repo, *, fields: dict, accept_license: bool) -> AccessRequest:
    policy = GatingPolicy.for_repo(repo)
    if not user.email_verified:
        raise RequestRefused(
            f"verify your email address ({user.email}) first: open the link we sent you, then ask again", 403
        )
    if not repo.gated:
        raise RequestRefused(f"{repo.repo_id} is not gated: you can download it without asking", 409)
    if not accept_license:
        raise RequestRefused(
            f"accept the license of {repo.repo_id} (version {policy.license_version}) to ask for access"
        )
    if Grant.active().filter(user=user, repo=repo).exists():
        raise RequestRefused(f"you already have access to {repo.repo_id}", 409)
    try:
        with transaction.atomic():
            request = AccessRequest.objects.create(
                user=user, repo=repo, fields=fields, license_version=policy.license_version
            )
    except IntegrityError:
        raise RequestRefused(
            f"you already have a pending request for {repo.repo_id}; a reviewer will answer it", 409
        ) from None
    if policy.mode == GatingPolicy.Mode.AUTOMATIC:
        decide(request, status=AccessRequest.State.ACCEPTED, reviewer=None)
    return request


@transaction.atomic
def decide(request: AccessRequest, *, status: str, reviewer, reason: str = "") -> AccessRequest:
    """Move a request to accepted, rejected or back to pending; grants follow the decision.

    As on the Hub, rejecting someone whose request was accepted revokes their grant.
    """
    now = timezone.now()
    if status not in AccessRequest.State.values:
        raise RequestRefused(f"status must be one of {', '.join(AccessRequest.State.values)}")
    if status == AccessRequest.State.REJECTED and not reason.strip():
        reason = "rejected by a reviewer"
    request.state = status
    request.decided_at = None if status == AccessRequest.State.PENDING else now
    request.decided_by = reviewer
    request.rejection_reason = reason if status == AccessRequest.State.REJECTED else ""
    request.save()
    live = Grant.objects.filter(user=request.user, repo=request.repo, revoked_at__isnull=True)
    if status == AccessRequest.State.ACCEPTED:
        if not live.exists():
            Grant.objects.create(user=request.user, repo=request.repo, request=request, granted_by=reviewer)
    else:
        live.update(revoked_at=now)
    return request


@transaction.atomic
def grant_access(user, repo, *, granted_by) -> Grant:
    """Give access to someone who may never have asked (the Hub's "grant access")."""
    existing = Grant.objects.filter(user=user, repo=repo, revoked_at__isnull=True).first()
    if existing is not None:
        return existing
    request = AccessRequest.objects.filter(user=user, repo=repo, state=AccessRequest.State.PENDING).first()
    if request is not None:
        decide(request, status=AccessRequest.State.ACCEPTED, reviewer=granted_by)
        return Grant.objects.get(user=user, repo=repo, revoked_at__isnull=True)
    request = AccessRequest.objects.create(
        user=user,
        repo=repo,
        state=AccessRequest.State.ACCEPTED,
        decided_at=timezone.now(),
        decided_by=granted_by,
        license_version=GatingPolicy.for_repo(repo).license_version,
    )
    return Grant.objects.create(user=user, repo=repo, request=request, granted_by=granted_by)
