from django.core.management.base import BaseCommand, CommandError

from distribution.models import Repo, Revision
from verification.services import prepare_traceable


class Command(BaseCommand):
    help = (
        "Write and verify the served layout of a traceable repo's verified or released revision, in this process "
        "(run it where the workers run: the smoke pass needs their packages). For a repo marked traceable after "
        "its revision was verified, or a served layout lost from storage (rebuilt with its recorded carriers and "
        "key, so the copies already issued stay the same). Until it passes, the revision is served as published."
    )

    def add_arguments(self, parser):
        parser.add_argument("repo", help="ORG/NAME")
        parser.add_argument(
            "--revision", help="the commit id or a prefix of 7+ characters (default: the latest released revision)"
        )

    def handle(self, *args, repo, revision, **options):
        try:
            found = Repo.by_id(repo)
            target = found.revision_by_prefix(revision) if revision else latest_released(found)
        except LookupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{repo}@{target.commit} ({target.state}): preparing its served layout")
        try:
            report = prepare_traceable(target, say=lambda line: self.stdout.write(f"  {line}"))
        except ValueError as error:
            raise CommandError(str(error)) from None
        if not report.ok:
            for check in report.failures:
                self.stdout.write(f"  FAILED {check.code}{' ' + check.file if check.file else ''}: {check.message}")
            raise CommandError(
                f"the served layout of {repo}@{target.commit[:12]} did not pass its checks: no copy of it can be "
                "issued, and it stays served as published"
            )
        self.stdout.write(f"{repo}@{target.commit}: served layout verified; each recipient now gets their own copy")


def latest_released(repo: Repo) -> Revision:
    released = repo.latest_released()
    if released is None:
        raise LookupError(f"{repo.repo_id} has no released revision; name one with --revision")
    return released
