"""Named people, built the same way in every test.

alice applies for access, bob reviews acme's repos, carol is staff, dave is a stranger whose email
is not verified yet.
"""

from access.models import ApiToken, Reviewer, Scope, User


def person(username: str, *, verified: bool = True, staff: bool = False, reviews=(), email: str = "") -> User:
    user = User.objects.create_user(
        username=username,
        email=email or f"{username}@example.org",
        password=f"{username}-password",
        is_staff=staff,
        is_superuser=staff,
    )
    if verified:
        user.mark_email_verified()
    for repo in reviews:
        Reviewer.objects.create(user=user, repo=repo)
    return user


def token_for(user: User, name: str = "test", *, scopes=tuple(Scope), expires_at=None, repos=None) -> str:
    """A token of `user`; unless told otherwise it carries every scope and reaches every repo, as the
    tokens made before scopes existed do, so it can do all its owner may."""
    return ApiToken.issue(user, name, scopes=scopes, expires_at=expires_at, repos=repos)[1]
