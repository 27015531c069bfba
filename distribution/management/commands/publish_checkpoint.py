from django.core.management.base import BaseCommand, CommandError

from distribution.publishing import PublishError, publish_checkpoint
from verification.tasks import verify_revision


class Command(BaseCommand):
    help = "Copy a checkpoint directory into storage as a new revision of ORG/NAME and queue its verification."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--repo", required=True, help="ORG/NAME; created (gated, manual approval) if new")
        parser.add_argument("--storage", choices=["local", "s3"], help="where to store it (default: STORAGE_BACKEND)")

    def handle(self, *args, directory, repo, storage, **options):
        try:
            revision = publish_checkpoint(directory, repo, storage_backend=storage)
        except PublishError as error:
            raise CommandError(str(error)) from None
        verify_revision.delay_on_commit(revision.pk)
        self.stdout.write(revision.commit)
