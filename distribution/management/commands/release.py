from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distribution.models import Repo, Revision, validate_tag_for
from distribution.publishing import PublishError, release_revision


class Command(BaseCommand):
    help = "Release a verified revision of ORG/NAME (the newest verified one unless --revision names it)."

    def add_arguments(self, parser):
        parser.add_argument("repo", help="ORG/NAME")
        parser.add_argument("--revision", help="the commit id (or a unique prefix of at least 7 characters)")
        parser.add_argument("--tag", help="a name for the revision, usable instead of the commit (e.g. v1.0)")

    def handle(self, *args, repo, revision, tag, **options):
        try:
            found = Repo.by_id(repo)
            target = found.revision_by_prefix(revision) if revision else None
        except LookupError as error:
            raise CommandError(str(error)) from None
        if target is None:
            target = found.revisions.filter(state=Revision.State.VERIFIED).order_by("-verified_at", "-id").first()
            if target is None:
                states = ", ".join(f"{r.commit[:12]} {r.state}" for r in found.revisions.all()[:5]) or "none"
                raise CommandError(f"{repo} has no verified revision to release (revisions: {states})")
        if tag:
            try:
                validate_tag_for(target, tag)
            except ValidationError as error:
                raise CommandError(error.messages[0]) from None
        try:
            release_revision(target, tag=tag or "")
        except PublishError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"released {repo}@{target.commit}")
