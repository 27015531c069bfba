"""Access requests, grants and licenses: every change goes through here, and each is one audit event."""

from datetime import timedelta

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from access.forms import clean_answers
from access.gate import needs_grant
from access.models import AccessRequest, AccessRule, ApiToken, GatingPolicy, Grant, Publisher, Reviewer, Scope
from audit.chain import record
from audit.tags import Tag
from hub.errors import Refusal
from mail.messages import send

State = AccessRequest.State
# The event a decision leaves, by the state it moves the request to.
DECIDED = {
    State.PENDING: Tag.REQUEST_PENDING,
    State.ACCEPTED: Tag.REQUEST_ACCEPTED,
    State.REJECTED: Tag.REQUEST_REJECTED,
}


class RequestRefused(Refusal):
    def __init__(self, message: str, status: int = 400, errors: dict | None = None):
        super().__init__(message, status)
        self.errors = errors or {}


def portal_url(path: str) -> str:
    return f"{settings.PUBLIC_URL or 'http://localhost:8000'}{path}"


def email_domain(user) -> str:
    return user.email.rpartition("@")[2].lower()


def rule_decision(policy: GatingPolicy, user, answers: dict) -> tuple[str, str]:
    """(action, reason) of the first matching rule; review when none matches."""
    for rule in policy.rules.all():
        values = {str(v).lower() for v in rule.values}
        if rule.kind == AccessRule.Kind.EMAIL_DOMAIN_IN:
            matched = email_domain(user) in values
        elif rule.kind == AccessRule.Kind.COUNTRY_IN:
            matched = any(
                str(answers.get(f["name"], "")).lower() in values for f in policy.form_fields if f["type"] == "country"
            )
        else:
            matched = any(answers.get(name) in (None, "", False) for name in rule.values)
        if matched:
            return rule.action, rule.reason or "your request does not meet this repo's access rules"
    return AccessRule.Action.REVIEW, ""


def latest_request(user, repo) -> AccessRequest | None:
    return AccessRequest.objects.filter(user=user, repo=repo).order_by("-created_at", "-id").first()


def check_cooldown(last: AccessRequest | None, policy: GatingPolicy) -> None:
    if last is not None and last.state == State.REJECTED and last.decided_at:
        again = last.decided_at + timedelta(days=policy.reapply_cooldown_days)
        if timezone.now() < again:
            raise RequestRefused(
                f"your last request was rejected ({last.rejection_reason}); you may ask again from "
                f"{again:%Y-%m-%d %H:%M} UTC",
                429,
            )


def submit_request(user, repo, *, fields: dict, accept_license: bool, request=None) -> AccessRequest:
    policy = GatingPolicy.for_repo(repo)
    if not user.email_verified:
        raise RequestRefused(
            f"verify your email address ({user.email}) first: open the link we sent you, then ask again", 403
        )
    if not needs_grant(repo):
        raise RequestRefused(f"{repo.repo_id} is not gated: you can download it without asking", 409)
    if Grant.active().filter(user=user, repo=repo).exists():
        raise RequestRefused(f"you already have access to {repo.repo_id}", 409)
    answers, errors = clean_answers(policy.form_fields, fields)
    if not accept_license:
        errors["accept_license"] = f"accept the license of {repo.repo_id} (version {policy.license_version})"
    if errors:
        raise RequestRefused(
            "the request is incomplete: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), 400, errors
        )
    # Any earlier request is decided here (a pending one makes the insert fail): asking again is a re-application.
    previous = latest_request(user, repo)
    check_cooldown(previous, policy)
    try:
        with transaction.atomic():
            access_request = AccessRequest.objects.create(
                user=user, repo=repo, fields=answers, license_version=policy.license_version
            )
            record(
                Tag.REQUEST_REAPPLIED if previous is not None else Tag.REQUEST_SUBMITTED,
                actor=user,
                subject=user,
                repo=repo,
                request=request,
                license_version=policy.license_version,
                **({"previous_request": previous.pk, "previous_state": previous.state} if previous else {}),
            )
    except IntegrityError:
        raise RequestRefused(
            f"you already have a pending request for {repo.repo_id}; a reviewer will answer it", 409
        ) from None
    action, reason = AccessRule.Action.REVIEW, ""
    if policy.mode == GatingPolicy.Mode.AUTOMATIC:
        action = AccessRule.Action.ACCEPT
    elif policy.mode == GatingPolicy.Mode.RULES:
        action, reason = rule_decision(policy, user, answers)
    if action == AccessRule.Action.ACCEPT:
        decide(access_request, status=State.ACCEPTED, reviewer=None)
    elif action == AccessRule.Action.REJECT:
        decide(access_request, status=State.REJECTED, reviewer=None, reason=reason)
    else:
        notify_reviewers(access_request)
    access_request.refresh_from_db()
    return access_request


def notify_reviewers(access_request: AccessRequest) -> None:
    reviewers = Reviewer.objects.filter(repo=access_request.repo, notify=Reviewer.Notify.IMMEDIATELY)
    repo, applicant = access_request.repo, access_request.user
    send(
        "access_requested",
        {
            "applicant": applicant.get_username(),
            "applicant_email": applicant.email,
            "repo_id": repo.repo_id,
            "answers": access_request.fields,
            "review_url": portal_url("/review/?repo=" + repo.repo_id),
        },
        [reviewer.user.email for reviewer in reviewers.select_related("user")],
    )


def tell_applicant(access_request: AccessRequest) -> None:
    repo, user = access_request.repo, access_request.user
    context = {"repo_id": repo.repo_id, "portal_url": portal_url(""), "account_url": portal_url("/account/")}
    if access_request.state == State.ACCEPTED:
        send("access_accepted", context, [user.email])
    elif access_request.state == State.REJECTED:
        context.update(reason=access_request.rejection_reason, repo_url=portal_url("/" + repo.repo_id))
        send("access_rejected", context, [user.email])


def end_expired_grant(user, repo) -> None:
    """Close a grant whose time ran out, so a new acceptance makes a new grant instead of finding the old one.

    Closed after its expiry, it still counts as expired (not revoked) for `record_expired_grants`.
    """
    now = timezone.now()
    Grant.objects.filter(user=user, repo=repo, revoked_at__isnull=True, expires_at__lte=now).update(revoked_at=now)


@transaction.atomic
def decide(access_request: AccessRequest, *, status: str, reviewer, reason: str = "", request=None) -> AccessRequest:
    """Move a request to accepted, rejected or back to pending; grants follow the decision.

    As on the Hub, rejecting someone whose request was accepted revokes their grant.
    """
    now = timezone.now()
    if status not in State.values:
        raise RequestRefused(f"status must be one of {', '.join(State.values)}")
    if status == State.REJECTED and not reason.strip():
        reason = "rejected by a reviewer"
    access_request.state = status
    access_request.decided_at = None if status == State.PENDING else now
    access_request.decided_by = reviewer
    access_request.rejection_reason = reason if status == State.REJECTED else ""
    access_request.save()
    end_expired_grant(access_request.user, access_request.repo)
    live = Grant.objects.filter(user=access_request.user, repo=access_request.repo, revoked_at__isnull=True)
    if status == State.ACCEPTED:
        if not live.exists():
            Grant.objects.create(
                user=access_request.user,
                repo=access_request.repo,
                request=access_request,
                granted_by=reviewer,
                license_version=access_request.license_version,
            )
    elif live.update(revoked_at=now):
        record(
            Tag.GRANT_REVOKED,
            actor=reviewer,
            subject=access_request.user,
            repo=access_request.repo,
            request=request,
            reason=reason,
        )
    record(
        DECIDED[status],
        actor=reviewer,
        subject=access_request.user,
        repo=access_request.repo,
        request=request,
        reason=reason,
        by_rule=reviewer is None,
    )
    tell_applicant(access_request)  # delivered once this transaction commits
    return access_request


@transaction.atomic
def grant_access(user, repo, *, granted_by, expires_at=None, request=None) -> Grant:
    """Give access to someone who may never have asked (the Hub's "grant access")."""
    end_expired_grant(user, repo)
    existing = Grant.objects.filter(user=user, repo=repo, revoked_at__isnull=True).first()
    if existing is not None:
        return existing
    pending = AccessRequest.objects.filter(user=user, repo=repo, state=State.PENDING).first()
    if pending is not None:
        decide(pending, status=State.ACCEPTED, reviewer=granted_by, request=request)
        grant = Grant.objects.get(user=user, repo=repo, revoked_at__isnull=True)
        if expires_at:
            Grant.objects.filter(pk=grant.pk).update(expires_at=expires_at)
        return grant
    version = GatingPolicy.for_repo(repo).license_version
    access_request = AccessRequest.objects.create(
        user=user,
        repo=repo,
        state=State.ACCEPTED,
        decided_at=timezone.now(),
        decided_by=granted_by,
        license_version=version,
    )
    grant = Grant.objects.create(
        user=user,
        repo=repo,
        request=access_request,
        granted_by=granted_by,
        expires_at=expires_at,
        license_version=version,
    )
    record(
        Tag.GRANT_CREATED,
        actor=granted_by,
        subject=user,
        repo=repo,
        request=request,
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    return grant


def accept_current_license(user, repo, *, version: str, request=None) -> Grant:
    """A grantee accepts a new license version, which their downloads wait for."""
    policy = GatingPolicy.for_repo(repo)
    if version != policy.license_version:
        raise RequestRefused(f"the current license of {repo.repo_id} is version {policy.license_version}", 409)
    grant = Grant.active().filter(user=user, repo=repo).first()
    if grant is None:
        raise RequestRefused(f"you have no access to {repo.repo_id} yet: ask for it first", 404)
    Grant.objects.filter(pk=grant.pk).update(license_version=version)
    record(Tag.LICENSE_ACCEPTED, actor=user, subject=user, repo=repo, request=request, license_version=version)
    grant.refresh_from_db()
    return grant


def record_expired_grants(now=None) -> int:
    """Periodic: one access:grant:expired event per grant whose time ran out; running it again records nothing."""
    now = now or timezone.now()
    expired = Grant.objects.filter(expires_at__lte=now).filter(
        # A grant extended after its expiry was recorded is recorded again when the new end passes.
        Q(expiry_recorded_at__isnull=True) | Q(expiry_recorded_at__lt=F("expires_at")),
        # A grant revoked before its end never expired.
        Q(revoked_at__isnull=True) | Q(revoked_at__gt=F("expires_at")),
    )
    recorded = 0
    for grant in expired.select_related("user", "repo"):
        with transaction.atomic():
            # Conditional on what was read, so two runs at once record each expiry once.
            claimed = Grant.objects.filter(pk=grant.pk, expiry_recorded_at=grant.expiry_recorded_at).update(
                expiry_recorded_at=now
            )
            if claimed:
                record(
                    Tag.GRANT_EXPIRED,
                    subject=grant.user,
                    repo=grant.repo,
                    grant=grant.pk,
                    expires_at=grant.expires_at.isoformat(),
                )
                recorded += 1
    return recorded


def create_token(
    user, name: str, *, scopes=(Scope.READ,), expires_at=None, repos=None, actor=None, request=None
) -> tuple[ApiToken, str]:
    """A new API token for `user` and its raw value (shown once), recorded whoever made it, with what it
    may do: its scopes, its expiry and the repos it is limited to (`repos` None: every repo)."""
    with transaction.atomic():
        token, raw = ApiToken.issue(user, name, scopes=scopes, expires_at=expires_at, repos=repos)
        record(
            Tag.TOKEN_CREATED,
            actor=actor,
            subject=user,
            request=request,
            name=name,
            hint=token.hint,
            scopes=sorted({Scope(scope).value for scope in scopes}),
            expires_at=expires_at.isoformat() if expires_at else None,
            repos=None if repos is None else sorted(repo.repo_id for repo in repos),
        )
    return token, raw


def assign_publisher(user, repo, *, via: str, actor=None, request=None) -> bool:
    """Name `user` a publisher of `repo`, with its event; False when they already were."""
    _, created = Publisher.objects.get_or_create(user=user, repo=repo)
    if created:
        record(Tag.PUBLISHER_ASSIGNED, actor=actor, subject=user, repo=repo, request=request, via=via)
    return created


def record_account_created(user, *, via: str, actor=None, request=None) -> None:
    """One event per new account, whichever way it was made: the sign-up page or an operator's command."""
    record(Tag.ACCOUNT_CREATED, actor=actor, subject=user, request=request, via=via, email=user.email)


def assign_reviewer(user, repo, *, via: str, actor=None, request=None) -> bool:
    """Make `user` a reviewer of `repo`, with its event; False when they already were."""
    _, created = Reviewer.objects.get_or_create(user=user, repo=repo)
    if created:
        record(Tag.REVIEWER_ASSIGNED, actor=actor, subject=user, repo=repo, request=request, via=via)
    return created


def reset_second_factor(user, *, via: str, actor=None, request=None) -> int:
    """Remove every authenticator of `user` (the app and its recovery codes), for a lost device: their
    next staff page asks them to set up a new one. Returns how many were removed."""
    removed = list(Authenticator.objects.filter(user=user).values_list("type", flat=True))
    Authenticator.objects.filter(user=user).delete()
    if removed:
        record(Tag.SECOND_FACTOR_REMOVED, actor=actor, subject=user, request=request, via=via, types=sorted(removed))
    return len(removed)


def record_email_verified(user, *, email: str, via: str, actor=None, request=None) -> None:
    record(Tag.EMAIL_VERIFIED, actor=actor, subject=user, request=request, via=via, email=email)


def verify_email_address(user, *, via: str, actor=None, request=None) -> bool:
    """Mark an operator-made account's address verified, with its event; False when it already was."""
    if user.email_verified:
        return False
    user.mark_email_verified()
    record_email_verified(user, email=user.email, via=via, actor=actor, request=request)
    return True


def send_review_digests(now=None) -> int:
    """One email per reviewer who chose the daily digest: the requests still pending from the last day."""
    now = now or timezone.now()
    since = now - timedelta(days=1)
    sent = 0
    reviewers = Reviewer.objects.filter(notify=Reviewer.Notify.DAILY).select_related("user", "repo")
    by_user = {}
    for reviewer in reviewers:
        by_user.setdefault(reviewer.user, []).append(reviewer.repo)
    for user, repos in by_user.items():
        pending = AccessRequest.objects.filter(repo__in=repos, state=State.PENDING, created_at__gte=since)
        pending = list(pending.select_related("user", "repo").order_by("repo__org", "repo__name", "created_at"))
        if not pending or not user.email:
            continue
        send("review_digest", {"pending": pending, "review_url": portal_url("/review/")}, [user.email])
        sent += 1
    return sent
