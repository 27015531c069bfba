"""Every rule about who may see, review and download a repo, in one place.

Each decision is a named function here; views and the download path call them and never work out
visibility again. A refusal is `AccessDenied`, carrying the Hugging Face error code the client
understands; one place per protocol turns it into a response.
"""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from django.db.models import F, Q, Sum
from django.utils import timezone

from access.models import GatingPolicy, Grant, Reviewer
from audit.connections import committed_once
from distribution.models import DownloadEvent, Repo, Revision, RevisionFile


class AccessDenied(Exception):
    def __init__(self, code: str, message: str, status: int, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


class LimitReached(Exception):
    """A download past one of its grant's caps; says which, and when or how it lifts."""


def signed_in(user) -> bool:
    return user is not None and user.is_authenticated


def is_staff(user) -> bool:
    return signed_in(user) and user.is_staff


class SecondFactorRequired(Exception):
    """A staff member or reviewer whose browser session has not passed their second factor: `enrolled`
    says whether they must set one up first or only enter a code from the one they have."""

    def __init__(self, *, enrolled: bool):
        super().__init__("enter a code from your authenticator app" if enrolled else "set up an authenticator app")
        self.enrolled = enrolled


def repo_not_found(repo_id: str) -> AccessDenied:
    # The same answer for unknown and hidden repos, so a private repo's existence never leaks.
    return AccessDenied(
        "RepoNotFound",
        f"Repository {repo_id} not found, or you are not allowed to see it. "
        "If it is private, sign in with a token of an account that has access.",
        404,
    )


def is_reviewer(user, repo: Repo) -> bool:
    if not signed_in(user):
        return False
    return user.is_staff or Reviewer.objects.filter(user=user, repo=repo).exists()


def reviewed_repos(user):
    """The repos whose requests and downloads `user` answers for: every repo for staff."""
    if is_staff(user):
        return Repo.objects.all()
    if not signed_in(user):
        return Repo.objects.none()
    return Repo.objects.filter(reviewers__user=user)


def needs_second_factor(user) -> bool:
    """Staff and reviewers (of any repo): whoever reads applicants' answers and who downloaded what, or
    decides access."""
    return is_staff(user) or (signed_in(user) and Reviewer.objects.filter(user=user).exists())


def check_second_factor(request) -> None:
    """Refuse a browser session of someone who needs a second factor unless they have enrolled one and
    this session passed it: at sign-in, on allauth's re-authentication page, or by confirming the
    enrolment in this session. allauth records each way a session was authenticated; "mfa" is a TOTP or
    recovery code. Bearer tokens are not sessions and never come here."""
    user = request.user
    if not needs_second_factor(user):
        return
    if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
        raise SecondFactorRequired(enrolled=False)
    if not any(record.get("method") == "mfa" for record in get_authentication_records(request, user)):
        raise SecondFactorRequired(enrolled=True)


def needs_grant(repo: Repo) -> bool:
    """Whether downloading from `repo` takes an accepted access request (a gated repo)."""
    return repo.gated


def can_see(user, repo: Repo) -> bool:
    if not repo.private:
        return True
    if not signed_in(user):
        return False
    return is_reviewer(user, repo) or Grant.active().filter(user=user, repo=repo).exists()


def find_repo(user, org: str, name: str) -> Repo:
    repo = Repo.objects.filter(org=org, name=name).first()
    if repo is None or not can_see(user, repo):
        raise repo_not_found(f"{org}/{name}")
    return repo


def visible_repos(user):
    if is_staff(user):
        return Repo.objects.all()
    if not signed_in(user):
        return Repo.objects.filter(private=False)
    return Repo.objects.filter(
        Q(private=False) | Q(reviewers__user=user) | Q(grants__user=user, grants__in=Grant.active().filter(user=user))
    ).distinct()


def listed_revisions(user, repo: Repo):
    """The revisions a repo page lists: every whole one for its reviewers, the released ones for everyone else."""
    if is_reviewer(user, repo):
        return repo.revisions.exclude(state=Revision.State.DRAFT)
    return repo.revisions.filter(state=Revision.State.RELEASED)


def downloadable_revisions(user, repo: Repo):
    """The revisions `user` may name in a download: unreleased ones are staff-only, drafts (files still
    being published) no one's."""
    revisions = repo.revisions.exclude(state=Revision.State.DRAFT)
    return revisions if is_staff(user) else revisions.filter(state=Revision.State.RELEASED)


def may_see_verification(user, repo: Repo, revision: Revision) -> bool:
    """The check-by-check verification of a revision is for its repo's reviewers and its publisher;
    a draft has none to see."""
    if revision.state == Revision.State.DRAFT:
        return False
    return signed_in(user) and (is_reviewer(user, repo) or revision.published_by_id == user.pk)


def permit_download(user, repo: Repo) -> Grant | None:
    """The grant that lets `user` download from `repo`; None when no grant is needed (staff, ungated).

    A private repo the caller may not see is refused as not found, whatever else holds.
    """
    if is_staff(user):
        return None
    if signed_in(user):
        # One query on the download path: the grant, with the repo's current license version beside it.
        grant = (
            Grant.active().filter(user=user, repo=repo).annotate(current_license=F("repo__policy__license_version"))
        ).first()
        if grant is not None:
            version = grant.current_license or GatingPolicy._meta.get_field("license_version").default
            if grant.license_version and grant.license_version != version:
                raise AccessDenied(
                    "GatedRepo",
                    f"The license of {repo.repo_id} changed to version {version}. Accept it on the repo page, "
                    f"/{repo.repo_id}, then download again.",
                    403,
                )
            return grant
    if repo.private and not is_reviewer(user, repo):
        raise repo_not_found(repo.repo_id)
    if not needs_grant(repo):
        return None
    if not signed_in(user):
        raise AccessDenied(
            "GatedRepo",
            f"Access to {repo.repo_id} is restricted. Sign in with a token (Authorization: Bearer ...) "
            "of an account whose access request was accepted.",
            401,
        )
    raise AccessDenied(
        "GatedRepo",
        f"Access to {repo.repo_id} is restricted and you are not in the authorized list. "
        f"Ask for access on the repo page, /{repo.repo_id}.",
        403,
    )


def grant_in_force(grant: Grant | None) -> bool:
    """Whether a grant a download was permitted under still holds at this second (None: none was needed)."""
    return grant is None or grant.expires_at is None or grant.expires_at > timezone.now()


def is_capped(grant: Grant | None) -> bool:
    """Whether downloads under `grant` count against a cap, which reads the events already stored."""
    return grant is not None and (grant.max_complete_downloads is not None or grant.max_bytes_per_day is not None)


def within_caps(grant: Grant | None, stored: RevisionFile, *, whole: bool, expected: int, record, landed):
    """`record()` (the download's event, which is what the caps count), unless it would take the grant
    past a cap: then LimitReached, and nothing written. For a capped grant the check and the write hold
    a lock of the grant, so downloads running at the same moment are counted one after the other.
    `landed(event)` says whether the event was stored, when the connection is lost during its commit."""
    if not is_capped(grant):
        return record()

    def reserved():
        Grant.objects.select_for_update().filter(pk=grant.pk).first()
        check_caps(grant, stored, whole=whole, expected=expected)
        return record()

    return committed_once(reserved, landed=landed)


def check_caps(grant: Grant, stored: RevisionFile, *, whole: bool, expected: int) -> None:
    """Refuse a download past the grant's caps. A whole download is one whose window covers the file,
    however it was asked for (no Range, `bytes=0-`, a Range that is not understood, a redirect)."""
    events = DownloadEvent.objects.filter(grant=grant, status__in=(200, 206, 302))
    if grant.max_complete_downloads is not None and whole:
        fetched = events.filter(file=stored, bytes_expected__gte=stored.size).count()
        if fetched >= grant.max_complete_downloads:
            raise LimitReached(
                f"your access allows {grant.max_complete_downloads} complete download(s) of "
                f"{stored.path}; ask the repo's reviewers to raise it"
            )
    if grant.max_bytes_per_day is not None:
        midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        today = events.filter(created_at__gte=midnight).aggregate(total=Sum("bytes_expected"))["total"] or 0
        if today + expected > grant.max_bytes_per_day:
            raise LimitReached(
                f"your access allows {grant.max_bytes_per_day} bytes a day and {today} were "
                "served today; the count starts again at 00:00 UTC"
            )


def decision_reusable(user, grant: Grant | None, token) -> bool:
    """Whether a download's permission may be reused for the same request for a few seconds (the fast
    path): only for a bearer token of an account that is not staff, under a grant without caps."""
    return signed_in(user) and not user.is_staff and token is not None and not is_capped(grant)
