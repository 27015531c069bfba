from django.core.management.base import BaseCommand, CommandError

from access.models import User
from access.services import reset_second_factor


class Command(BaseCommand):
    help = (
        "Remove a person's second factor (authenticator app and recovery codes) after they lost the device; "
        "check who is asking first. Their next staff page asks them to set up a new one."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no account is named {username!r}")
        removed = reset_second_factor(user, via="reset_second_factor")
        if not removed:
            raise CommandError(f"{username} has no second factor to reset")
        self.stdout.write(
            f"removed {username}'s second factor; they sign in with their password and set up a new one "
            "before the next staff page"
        )
