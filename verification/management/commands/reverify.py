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
        parser.add_argument("repo", help="ORG/NAME")
        parser.add_argument(
            "--revision",
            help="the commit id or a prefix of 7+ characters (default: every released revision of the repo)",
        )

    def handle(self, *args, repo, revision, **options):
        try:
            found = Repo.by_id(repo)
            targets = [found.revision_by_prefix(revision)] if revision else []
        except LookupError as error:
            raise CommandError(str(error)) from None
        if not targets:
            targets = list(found.revisions.filter(state=Revision.State.RELEASED))
            if not targets:
                raise CommandError(f"{repo} has no released revision; name one with --revision")
        failed = 0
        for target in targets:
            progress = progress_for(self.stderr._out)  # each file's read: a status line on a terminal
            try:
                run = reverify(target, progress=progress)
            except ValueError as error:
                raise CommandError(str(error)) from None
            except StorageError as error:  # nothing was judged or changed: the revision stays as it was
                raise CommandError(
                    f"{repo}@{target.commit}: the storage could not be read ({error}); nothing changed, "
                    "run reverify again once it answers"
                ) from None
            finally:
                progress.close()
            target.refresh_from_db()
            for warning in run.checks.filter(status=WARN):
                self.stdout.write(f"{repo}@{target.commit}: warning: {warning.file or warning.name}: {warning.message}")
            if run.ok:
                self.stdout.write(f"{repo}@{target.commit}: every check passed ({target.state})")
            else:
                failed += 1
                self.stdout.write(f"{repo}@{target.commit}: FAILED, now {target.state}: {target.failure_reason}")
        if failed:
            raise CommandError(f"{failed} revision(s) failed re-verification")
