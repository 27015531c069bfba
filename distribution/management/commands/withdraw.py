import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from distribution.models import Repo
from distribution.publishing import PublishError, withdraw_revision


class Command(BaseCommand):
    help = "Withdraw a released revision of ORG/NAME: every way of downloading it stops."

    def add_arguments(self, parser):
        parser.add_argument("repo", help="ORG/NAME")
        parser.add_argument("--revision", required=True, help="the commit id (or a unique prefix of 7+ characters)")
        parser.add_argument("--reason", required=True, help="why: recorded in the audit log and shown to staff")

    def handle(self, *args, repo, revision, reason, **options):
        try:
            target = Repo.by_id(repo).revision_by_prefix(revision)
            withdraw_revision(target, reason=reason)
        except (LookupError, PublishError) as error:
            raise CommandError(str(error)) from None
        # Web processes answer repeats from decisions at most this old: past it, none serves the revision.
        time.sleep(settings.DOWNLOAD_DECISION_SECONDS)
        self.stdout.write(
            f"withdrawn {repo}@{target.commit}: the portal serves it to nobody and refuses every link it issued; "
            f"presigned object-storage links already handed out expire within {settings.DOWNLOAD_REDIRECT_SECONDS} s"
        )
