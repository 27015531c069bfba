"""`create_account`: a verified reviewer with a hashed token, and a clear refusal of bad input."""

import pytest
from django.core.management import CommandError

from access.models import ApiToken, Publisher, Reviewer, Scope, User, hash_token
from audit.models import AuditEvent
from distribution.models import Repo
from tests.support.commands import run

pytestmark = pytest.mark.django_db


def test_create_account_makes_a_verified_reviewer_with_a_hashed_token(tmp_path):
    Repo.objects.create(org="acme", name="tiny")
    token = run(
        "create_account",
        "bob",
        "--email",
        "bob@example.org",
        "--verified",
        "--reviewer-of",
        "acme/tiny",
        "--print-token",
    )
    bob = User.objects.get(username="bob")
    assert bob.email_verified and not bob.has_usable_password()
    assert Reviewer.objects.filter(user=bob, repo__name="tiny").exists()
    assigned = AuditEvent.objects.get(tag="access:reviewer:assigned")
    assert (assigned.subject_username, assigned.repo_id, assigned.data["via"]) == ("bob", "acme/tiny", "create_account")
    stored = ApiToken.objects.get(user=bob)
    assert token.startswith("wg_") and stored.digest == hash_token(token)
    assert not ApiToken.objects.filter(digest=token).exists() and token not in stored.hint + stored.name


def test_create_account_names_a_publisher_whose_token_carries_the_scopes_of_its_roles():
    Repo.objects.create(org="acme", name="tiny")
    Repo.objects.create(org="acme", name="reviewed")
    token = run(
        "create_account",
        "ci",
        "--email",
        "ci@example.org",
        "--publisher-of",
        "acme/tiny",
        "--reviewer-of",
        "acme/reviewed",
        "--print-token",
    )
    ci = User.objects.get(username="ci")
    assert Publisher.objects.filter(user=ci, repo__name="tiny").exists()
    assigned = AuditEvent.objects.get(tag="access:publisher:assigned")
    assert (assigned.subject_username, assigned.repo_id, assigned.data["via"]) == ("ci", "acme/tiny", "create_account")
    stored = ApiToken.objects.get(digest=hash_token(token))
    assert stored.scopes == ["publish", "read", "review"] and stored.all_repos and stored.expires_at is None
    run("create_account", "root", "--email", "root@example.org", "--staff", "--print-token")
    assert ApiToken.objects.get(user__username="root").scopes == sorted(Scope.values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["erin", "--email", "not-an-email"], "is not an email address"),
        (["erin", "--email", "erin@example.org", "--reviewer-of", "acme/none"], "no repo acme/none"),
        (["erin", "--email", "erin@example.org", "--publisher-of", "acme/none"], "no repo acme/none"),
    ],
)
def test_create_account_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_account", *args)
    assert not User.objects.filter(username="erin").exists()
