from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from access.models import Scope, User
from access.services import (
    assign_publisher,
    assign_reviewer,
    create_token,
    record_account_created,
    verify_email_address,
)
from distribution.models import Repo


class Command(BaseCommand):
    help = (
        "Create an account (for operators and automation); optionally verified, a reviewer, a publisher, "
        "with a token that carries the scopes those roles use."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", required=True)
        parser.add_argument("--verified", action="store_true", help="mark the email address as verified")
        parser.add_argument("--reviewer-of", action="append", default=[], metavar="ORG/NAME")
        parser.add_argument(
            "--publisher-of", action="append", default=[], metavar="ORG/NAME", help="may add revisions to this repo"
        )
        parser.add_argument("--staff", action="store_true", help="staff see and review every repo")
        parser.add_argument("--password", help="a password for the web pages (default: none, token use only)")
        parser.add_argument("--print-token", action="store_true", help="create an API token and print it")

    def handle(
        self, *args, username, email, verified, reviewer_of, publisher_of, staff, password, print_token, **options
    ):
        try:
            validate_email(email)
        except Exception:
            raise CommandError(f"{email!r} is not an email address") from None
        if User.objects.filter(username=username).exists():
            raise CommandError(f"the username {username!r} is taken")
        if User.objects.filter(email__iexact=email).exists():
            raise CommandError(f"an account already uses {email}")
        try:
            reviewed = [Repo.by_id(repo_id) for repo_id in reviewer_of]
            published = [Repo.by_id(repo_id) for repo_id in publisher_of]
        except LookupError as error:
            raise CommandError(str(error)) from None
        with transaction.atomic():
            user = User.objects.create_user(
                username=username, email=email, password=password, is_staff=staff, is_superuser=staff
            )
            record_account_created(user, via="create_account")
            if verified:
                verify_email_address(user, via="create_account")
            for repo in reviewed:
                assign_reviewer(user, repo, via="create_account")
            for repo in published:
                assign_publisher(user, repo, via="create_account")
            scopes = token_scopes(reviewed, published, staff)
            raw = create_token(user, "created by create_account", scopes=scopes)[1] if print_token else None
        self.stdout.write(raw if raw else f"created {username}")


def token_scopes(reviewed, published, staff: bool) -> list[Scope]:
    """The scopes the account's roles use: read always, review and publish for those roles, admin for staff."""
    scopes = [Scope.READ]
    if reviewed or staff:
        scopes.append(Scope.REVIEW)
    if published or staff:
        scopes.append(Scope.PUBLISH)
    if staff:
        scopes.append(Scope.ADMIN)
    return scopes
