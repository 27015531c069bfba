import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from distribution.management.progress import progress_for
from distribution.publishing import PublishError, publish_checkpoint
from verification.tasks import verify_revision


class Command(BaseCommand):
    help = (
        "Copy a checkpoint directory into storage as a new revision of ORG/NAME and queue its verification. "
        "Run again after an interruption, it sends only what storage lacks."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--repo", required=True, help="ORG/NAME; created (gated, manual approval) if new")
        parser.add_argument("--storage", choices=["local", "s3"], help="where to store it (default: STORAGE_BACKEND)")
        parser.add_argument(
            "--expect-sha256",
            type=Path,
            metavar="SHA256SUMS",
            help="the training cluster's digests (sha256sum's format); refuse unless every file matches",
        )
        parser.add_argument(
            "--traceable",
            action="store_true",
            help="mark the repo traceable: every recipient gets a marked copy, and a leak names them (trace_leak)",
        )
        parser.add_argument("--quiet", action="store_true", help="no progress, only the result")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="the result as JSON on stdout instead of the id"
        )

    def handle(self, *args, directory, repo, storage, expect_sha256, traceable, quiet, as_json, **options):
        stderr = getattr(self.stderr, "_out", self.stderr)  # the raw stream: a bar rewrites its line
        try:
            publication = publish_checkpoint(
                directory,
                repo,
                storage_backend=storage,
                expect_sha256=expect_sha256,
                progress=progress_for(stderr, quiet=quiet),
                traceable=traceable,
            )
        except PublishError as error:
            if as_json and error.details:
                self.stdout.write(json.dumps({"error": str(error), **error.details}, indent=2))
            raise CommandError(str(error)) from None
        verify_revision.delay_on_commit(publication.revision.pk)
        self.stdout.write(publication.as_json() if as_json else publication.revision.commit)
