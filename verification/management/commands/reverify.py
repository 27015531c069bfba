from django.core.management.base import BaseCommand, CommandError

from distribution.models import Repo, Revision
from distribution.storage import StorageError
from verification.core.progress import progress_for
from verification.core.report import WARN
from verification.services import reverify


class Command(BaseCommand):
    help = (
        "Check the stored bytes of a verified or released revision again (hashes, headers, tensors, smoke pass; "
        "for a traceable repo, its served layout too). A failure withdraws a released revision at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("repo", nargs="?", help="ORG/NAME")
        parser.add_argument(
            "--revision",
            help="the commit id or a prefix of 7+ characters (default: every released revision of the repo)",
        )
        parser.add_argument(
            "--all",
            dest="every",
            action="store_true",
            help="every released revision of every repo (after a restore, say)",
        )

    def handle(self, *args, repo, revision, every, **options):
        if every == bool(repo) or (every and revision):
            raise CommandError("name a repo (ORG/NAME, optionally with --revision), or give --all alone")
        released = Revision.objects.filter(state=Revision.State.RELEASED).select_related("repo")
        if every:
            targets = list(released.order_by("repo__org", "repo__name", "created_at"))
            if not targets:
                raise CommandError("no revision is released; nothing to check")
        else:
            try:
                found = Repo.by_id(repo)
                targets = [found.revision_by_prefix(revision)] if revision else list(released.filter(repo=found))
            except LookupError as error:
                raise CommandError(str(error)) from None
            if not targets:
                raise CommandError(f"{repo} has no released revision; name one with --revision")
        failed = 0
        for done, target in enumerate(targets):
            named = f"{target.repo.repo_id}@{target.commit}"
            progress = progress_for(self.stderr._out)  # each file's read: a status line on a terminal
            try:
                run = reverify(target, progress=progress)
            except ValueError as error:
                raise CommandError(str(error)) from None
            except StorageError as error:  # nothing was judged or changed: the revision stays as it was
                checked = f" ({done} revision(s) checked before it, printed above)" if done else ""
                raise CommandError(
                    f"{named}: the storage could not be read ({error}); nothing changed for it{checked}; "
                    "run reverify again once it answers"
                ) from None
            finally:
                progress.close()
            target.refresh_from_db()
            for warning in run.checks.filter(status=WARN):
                self.stdout.write(f"{named}: warning: {warning.file or warning.name}: {warning.message}")
            if run.ok:
                self.stdout.write(f"{named}: every check passed ({target.state})")
            else:
                failed += 1
                self.stdout.write(f"{named}: FAILED, now {target.state}: {target.failure_reason}")
        if failed:
            raise CommandError(f"{failed} revision(s) failed re-verification")
