"""Every rule about who may see a repo and who may download from it, in one place.

Views call `find_repo` and `permit_download`; each raises `AccessDenied` with the Hugging Face error
code the client understands, and one place per protocol turns that into a response.
"""

from django.db.models import F, Q

from access.models import GatingPolicy, Grant, Reviewer
from distribution.models import Repo


class AccessDenied(Exception):
    def __init__(self, code: str, message: str, status: int, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


def repo_not_found(repo_id: str) -> AccessDenied:
    # The same answer for unknown and hidden repos, so a private repo's existence never leaks.
    return AccessDenied(
        "RepoNotFound",
        f"Repository {repo_id} not found, or you are not allowed to see it. "
        "If it is private, sign in with a token of an account that has access.",
        404,
    )


def is_reviewer(user, repo: Repo) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return user.is_staff or Reviewer.objects.filter(user=user, repo=repo).exists()


def can_see(user, repo: Repo) -> bool:
    if not repo.private:
        return True
    if user is None or not user.is_authenticated:
        return False
    return is_reviewer(user, repo) or Grant.active().filter(user=user, repo=repo).exists()


def find_repo(user, org: str, name: str) -> Repo:
    repo = Repo.objects.filter(org=org, name=name).first()
    if repo is None or not can_see(user, repo):
        raise repo_not_found(f"{org}/{name}")
    return repo


def visible_repos(user):
    repos = Repo.objects.all()
    if user is not None and user.is_authenticated and user.is_staff:
        return repos
    if user is None or not user.is_authenticated:
        return repos.filter(private=False)
    return repos.filter(
        Q(private=False) | Q(reviewers__user=user) | Q(grants__user=user, grants__in=Grant.active().filter(user=user))
    ).distinct()


def permit_download(user, repo: Repo) -> Grant | None:
    """The grant that lets `user` download from `repo`; None when no grant is needed (staff, ungated)."""
    if user is not None and user.is_authenticated and user.is_staff:
        return None
    if user is not None and user.is_authenticated:
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
    if not repo.gated:
        return None
    if user is None or not user.is_authenticated:
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
