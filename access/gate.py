"""Every rule about who may see, review and download a repo, in one place.

Each decision is a named function here; views and the download path call them and never work out
visibility again. A refusal is `AccessDenied`, carrying the Hugging Face error code the client
understands; one place per protocol turns it into a response.

A request made with an API token passes it as `token`: the token's scopes and repo restriction narrow
what its owner may do (a browser session, `token=None`, carries all of it). Reading (seeing a private
repo, downloading) takes the read scope; deciding requests, the review scope; publishing, the publish
scope; and the powers of staff travel in a token only with the admin scope, which widens what the other
scopes do to every repo (alone it opens the whole audit). A token limited to some repos acts as if
the others did not exist.
"""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from django.db.models import F, Q, Sum
from django.utils import timezone

from access.models import GatingPolicy, Grant, Publisher, Reviewer, Scope
from audit.connections import committed_once
from distribution.models import DownloadEvent, Repo, Revision, RevisionFile


class AccessDenied(Exception):
    def __init__(self, code: str | None, message: str, status: int, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


class LimitReached(Exception):
    """A download past one of its grant's caps; says which, and when or how it lifts."""


def signed_in(user) -> bool:
    return user is not None and user.is_authenticated


def is_staff(user, token=None) -> bool:
    """Whether the caller acts with staff powers: a staff account through its session, or through a
    token with the admin scope."""
    return signed_in(user) and user.is_staff and token_allows(token, Scope.ADMIN)


def token_allows(token, scope: Scope) -> bool:
    """Whether the credential carries `scope`; a browser session (no token) carries every one."""
    return token is None or scope in token.scopes


def within_reach(token, repo: Repo) -> bool:
    """Whether the credential reaches `repo`: a session and an unrestricted token reach every repo."""
    return token is None or token.repo_ids is None or repo.pk in token.repo_ids


def in_reach(token, repos):
    """`repos` (a queryset of Repo) narrowed to those the credential reaches."""
    return repos if token is None or token.repo_ids is None else repos.filter(pk__in=token.repo_ids)


def repos_reached(token):
    """The repos a token is limited to; None when the credential reaches every repo."""
    return None if token is None or token.repo_ids is None else Repo.objects.filter(pk__in=token.repo_ids)


def token_in_force(token) -> bool:
    """Whether a token a decision was made with still works at this second (None: no token was used)."""
    return token is None or (token.revoked_at is None and not token.expired())


def missing_scope(scope: Scope, to: str) -> AccessDenied:
    return AccessDenied(
        None,
        f"This token may not {to}: it was created without the {scope.value} scope. "
        "Create a token with that scope on your account page, /account/.",
        403,
    )


class SecondFactorRequired(Exception):
    """A staff member, reviewer or publisher whose browser session has not passed their second factor: `enrolled`
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


def is_reviewer(user, repo: Repo, token=None, *, scope: Scope = Scope.REVIEW) -> bool:
    """Whether `user` reviews `repo` (staff review every repo) as far as the credential carries `scope`:
    deciding requests takes the review scope; seeing and downloading as a reviewer, the read scope."""
    if not signed_in(user) or not token_allows(token, scope) or not within_reach(token, repo):
        return False
    return is_staff(user, token) or Reviewer.objects.filter(user=user, repo=repo).exists()


def permit_review(user, repo: Repo, token=None) -> None:
    """Refuse (403) a caller who may not decide `repo`'s access requests with this credential, saying why."""
    if is_reviewer(user, repo, token):
        return
    if is_reviewer(user, repo):
        raise missing_scope(Scope.REVIEW, f"decide access requests on {repo.repo_id}")
    raise AccessDenied(None, f"You are not a reviewer of {repo.repo_id}.", 403)


def reviewed_repos(user, token=None):
    """The repos whose requests and downloads `user` answers for through this credential: every repo for staff."""
    if not signed_in(user) or not token_allows(token, Scope.REVIEW):
        return Repo.objects.none()
    repos = Repo.objects.all() if is_staff(user, token) else Repo.objects.filter(reviewers__user=user)
    return in_reach(token, repos)


def audited_repos(user, token=None):
    """The repos whose downloads `user` may audit through this credential; None is every repo (staff)."""
    return repos_reached(token) if is_staff(user, token) else reviewed_repos(user, token)


def may_publish(user, repo: Repo, token=None) -> bool:
    """Whether `user` may add revisions to `repo` through this credential: staff or a named publisher."""
    if not signed_in(user) or not token_allows(token, Scope.PUBLISH) or not within_reach(token, repo):
        return False
    return is_staff(user, token) or Publisher.objects.filter(user=user, repo=repo).exists()


def permit_publish(user, repo: Repo, token=None) -> None:
    """Refuse a caller who may not publish to `repo` with this credential, saying why."""
    if may_publish(user, repo, token):
        return
    if not can_see(user, repo, token):
        raise repo_not_found(repo.repo_id)
    if not signed_in(user):
        raise AccessDenied(None, f"Publishing to {repo.repo_id} takes a token (Authorization: Bearer ...).", 401)
    if may_publish(user, repo):
        raise missing_scope(Scope.PUBLISH, f"publish to {repo.repo_id}")
    raise AccessDenied(None, f"You may not publish to {repo.repo_id}: staff name its publishers.", 403)


def may_create_repo_in(user, org: str, token=None) -> bool:
    """Who may create a repo in `org` through this credential (publish scope, reaching every repo): staff,
    and whoever publishes to another repo of that organisation, since staff named them for it."""
    if not signed_in(user) or not token_allows(token, Scope.PUBLISH) or repos_reached(token) is not None:
        return False
    return is_staff(user, token) or Publisher.objects.filter(user=user, repo__org=org).exists()


def permit_create_repo(user, org: str, token=None) -> None:
    """Refuse, saying why, a caller who may not create repos in `org` with this credential."""
    if may_create_repo_in(user, org, token):
        return
    if not signed_in(user):
        raise AccessDenied(None, "Creating a repo takes a token (Authorization: Bearer ...).", 401)
    if not token_allows(token, Scope.PUBLISH):
        raise missing_scope(Scope.PUBLISH, f"create repos in {org}")
    raise AccessDenied(
        None,
        f"You may not create repos in {org}: staff do, and the publishers of its repos. Ask staff to name "
        "you a publisher of a repo there (or to create the repo).",
        403,
    )


def needs_second_factor(user) -> bool:
    """Staff, reviewers and publishers (of any repo): whoever reads applicants' answers and who downloaded
    what, decides access, or releases a revision to every grantee at once."""
    if is_staff(user):
        return True
    return signed_in(user) and (
        Reviewer.objects.filter(user=user).exists() or Publisher.objects.filter(user=user).exists()
    )


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


def can_see(user, repo: Repo, token=None) -> bool:
    if not within_reach(token, repo):
        return False
    if not repo.private:
        return True
    if not signed_in(user):
        return False
    if any(is_reviewer(user, repo, token, scope=scope) for scope in (Scope.REVIEW, Scope.READ)):
        return True
    if may_publish(user, repo, token):
        return True
    return token_allows(token, Scope.READ) and Grant.active().filter(user=user, repo=repo).exists()


def find_repo(user, org: str, name: str, token=None) -> Repo:
    repo = Repo.objects.filter(org=org, name=name).first()
    if repo is None or not can_see(user, repo, token):
        raise repo_not_found(f"{org}/{name}")
    return repo


def visible_repos(user):
    """The repos a signed-in person's pages list (pages take no token)."""
    if is_staff(user):
        return Repo.objects.all()
    if not signed_in(user):
        return Repo.objects.filter(private=False)
    return Repo.objects.filter(
        Q(private=False)
        | Q(reviewers__user=user)
        | Q(publishers__user=user)
        | Q(grants__user=user, grants__in=Grant.active().filter(user=user))
    ).distinct()


def repos_in_sight(user, token=None) -> list[Repo]:
    """The repos a listing through this credential names (the Hub's model list): each one `can_see`
    allows, by name, and never another."""
    candidates = in_reach(token, visible_repos(user)).order_by("org", "name")
    return [repo for repo in candidates if can_see(user, repo, token)]


def listed_revisions(user, repo: Repo):
    """The revisions a repo page lists: every whole one for its reviewers and publishers, the released ones
    for everyone else."""
    if is_reviewer(user, repo) or may_publish(user, repo):
        return repo.revisions.exclude(state=Revision.State.DRAFT)
    return repo.revisions.filter(state=Revision.State.RELEASED)


def downloadable_revisions(user, repo: Repo, token=None):
    """The revisions `user` may name in a download or a listing: unreleased ones are staff-only (through
    a token, one with the admin and read scopes), drafts and assembling ones (files still being published,
    or rebuilt from a Xet upload) no one's."""
    revisions = repo.revisions.exclude(state__in=(Revision.State.DRAFT, Revision.State.ASSEMBLING))
    staff_reads = is_staff(user, token) and token_allows(token, Scope.READ)
    return revisions if staff_reads else revisions.filter(state=Revision.State.RELEASED)


def may_see_verification(user, repo: Repo, revision: Revision) -> bool:
    """The check-by-check verification of a revision is for its repo's reviewers and publishers, and
    whoever published it; a draft has none to see."""
    if revision.state == Revision.State.DRAFT:
        return False
    if not signed_in(user):
        return False
    return is_reviewer(user, repo) or may_publish(user, repo) or revision.published_by_id == user.pk


def permit_download(user, repo: Repo, token=None) -> Grant | None:
    """The grant that lets `user` download from `repo`; None when no grant is needed (staff, ungated).

    A private repo the caller may not see is refused as not found, whatever else holds; so is any repo
    a token does not reach. A token without the read scope downloads nothing.
    """
    if not token_allows(token, Scope.READ) or not within_reach(token, repo):
        if not can_see(user, repo, token):
            raise repo_not_found(repo.repo_id)
        raise missing_scope(Scope.READ, f"download from {repo.repo_id}")
    if is_staff(user, token):
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
    if not can_see(user, repo, token):
        # Who may see the repo (its publishers too) is told below what a download takes; anyone else, nothing.
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


def usable_scopes(user) -> list[Scope]:
    """The scopes that give `user` something, offered when they make a token: read always, review to
    reviewers, publish to publishers, every one to staff."""
    usable = {
        Scope.READ: True,
        Scope.REVIEW: is_staff(user) or reviewed_repos(user).exists(),
        Scope.PUBLISH: is_staff(user) or Publisher.objects.filter(user=user).exists(),
        Scope.ADMIN: is_staff(user),
    }
    return [scope for scope, offered in usable.items() if offered]


def may_download(user, repo: Repo, token=None) -> bool:
    try:
        permit_download(user, repo, token)
    except AccessDenied:
        return False
    return True


def reads_gated_repos(token) -> bool:
    """Whether the credential reads every gated repo its owner has access to (read scope, no repo limit)."""
    return token_allows(token, Scope.READ) and (token is None or token.repo_ids is None)


def powers(user, token=None) -> list[tuple[Repo, list[Scope]]]:
    """What the credential may do now, repo by repo: for a token limited to repos, each of them; else each
    repo where its owner holds a grant or a role (every repo for staff). Read: a download would be permitted."""
    if token is not None and token.repo_ids is not None:
        repos = in_reach(token, Repo.objects.all())
    elif is_staff(user, token):
        repos = Repo.objects.all()
    else:
        repos = Repo.objects.filter(
            Q(grants__in=Grant.active().filter(user=user)) | Q(reviewers__user=user) | Q(publishers__user=user)
        ).distinct()
    found = []
    for repo in repos.order_by("org", "name"):
        checks = (
            (Scope.READ, may_download),
            (Scope.REVIEW, is_reviewer),
            (Scope.PUBLISH, may_publish),
        )
        scopes = [scope for scope, allowed in checks if allowed(user, repo, token)]
        if scopes:
            found.append((repo, scopes))
    return found
