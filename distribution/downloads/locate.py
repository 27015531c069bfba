"""Which stored file a download names, and the grant that permits it: the checks every download
request goes through before a channel answers it."""

import re

from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce

from access import gate
from access.gate import AccessDenied
from access.models import Grant
from distribution.models import Repo, Revision, RevisionFile

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")


def resolve_revision(user, repo: Repo, rev: str, token=None) -> Revision:
    """`main` is the newest released revision; a 40-hex id names one; anything else is a tag."""
    revisions = gate.downloadable_revisions(user, repo, token)
    if rev == "main":
        revision = revisions.filter(state=Revision.State.RELEASED).order_by("-released_at", "-id").first()
    elif COMMIT_PATTERN.match(rev):
        revision = revisions.filter(commit=rev).first()
    else:
        revision = revisions.filter(tag=rev).first()
    if revision is None:
        raise AccessDenied(
            "RevisionNotFound", f"Invalid rev id: {rev} (no released revision of {repo.repo_id} has it)", 404
        )
    return revision


def history(user, repo: Repo, revision: Revision, token=None) -> list[Revision]:
    """The revisions the caller may name, from `revision` back to the first, newest first: its commits."""
    ordered = list(
        gate.downloadable_revisions(user, repo, token)
        .select_related("repo")
        .order_by(Coalesce("released_at", "created_at").desc(), "-id")
    )
    return ordered[[older.pk for older in ordered].index(revision.pk) :]


def released_file(org: str, name: str, rev: str, path: str) -> RevisionFile | None:
    """The file at `path` in the released revision `rev` of ORG/NAME, with its revision and repo: one query."""
    files = RevisionFile.objects.select_related("revision__repo").filter(
        path=path, revision__repo__org=org, revision__repo__name=name, revision__state=Revision.State.RELEASED
    )
    if rev == "main":
        newest = Revision.objects.filter(repo=OuterRef("revision__repo"), state=Revision.State.RELEASED)
        files = files.filter(revision=Subquery(newest.order_by("-released_at", "-id").values("id")[:1]))
    elif COMMIT_PATTERN.match(rev):
        files = files.filter(revision__commit=rev)
    else:
        files = files.filter(revision__tag=rev)
    return files.first()


def locate_download(user, org: str, name: str, rev: str, path: str, token=None) -> tuple[RevisionFile, Grant | None]:
    """The file a download names and the grant that permits it; AccessDenied, worded by the full checks.

    Every download asks this, so a grantee's request for a released file takes two queries instead of
    four. Staff and every refusal go through the full checks, which say what is wrong.
    """
    stored = None if gate.is_staff(user, token) else released_file(org, name, rev, path)
    if stored is not None:
        try:
            return stored, gate.permit_download(user, stored.revision.repo, token)
        except AccessDenied:
            pass  # the full checks below word the refusal (an unknown repo, a revision, a license)
    repo = gate.find_repo(user, org, name, token)
    grant = gate.permit_download(user, repo, token)
    revision = resolve_revision(user, repo, rev, token)
    stored = revision.files.filter(path=path).select_related("revision__repo").first()
    if stored is None:
        raise AccessDenied(
            "EntryNotFound",
            f"{path} does not exist in revision {revision.commit}",
            404,
            headers={"X-Repo-Commit": revision.commit},
        )
    return stored, grant
