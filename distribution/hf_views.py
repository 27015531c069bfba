"""The Hugging Face Hub download protocol, so `snapshot_download`, `hf_hub_download` and `hf download`
work against the portal with `endpoint=<portal URL>` and a portal token."""

import re

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from access.gate import AccessDenied, find_repo, permit_download
from access.models import ApiToken, Grant, User
from distribution import fast_path
from distribution.models import Repo, Revision, RevisionFile
from distribution.serving import file_headers, serve_file
from distribution.tickets import LinkRefused, issue_ticket, read_ticket
from portal.audit import record
from portal.hf_protocol import hf_endpoint, hf_error
from portal.rate_limits import caller_key

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")


def resolve_revision(user, repo: Repo, rev: str) -> Revision:
    """`main` is the newest released revision; a 40-hex id names one. Unreleased ones are staff-only."""
    revisions = repo.revisions.all()
    if not (user is not None and user.is_authenticated and user.is_staff):
        revisions = revisions.filter(state=Revision.State.RELEASED)
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


def locate_download(user, org: str, name: str, rev: str, path: str) -> tuple[RevisionFile, Grant | None]:
    """The file a download names and the grant that permits it; AccessDenied, worded by the full checks.

    Every download asks this, so a grantee's request for a released file takes two queries instead of
    four. Staff, hidden repos and every refusal go through the full checks, which say what is wrong.
    """
    staff = user is not None and user.is_authenticated and user.is_staff
    stored = None if staff else released_file(org, name, rev, path)
    if stored is not None:
        try:
            grant = permit_download(user, stored.revision.repo)
        except AccessDenied:
            grant = None
        else:
            if grant is not None or not stored.revision.repo.private:
                return stored, grant
    repo = find_repo(user, org, name)
    grant = permit_download(user, repo)
    revision = resolve_revision(user, repo, rev)
    stored = revision.files.filter(path=path).select_related("revision__repo").first()
    if stored is None:
        raise AccessDenied(
            "EntryNotFound",
            f"{path} does not exist in revision {revision.commit}",
            404,
            headers={"X-Repo-Commit": revision.commit},
        )
    return stored, grant


def revision_info(revision: Revision, *, with_blobs: bool) -> dict:
    repo = revision.repo
    siblings = []
    for stored in revision.files.all():
        entry = {"rfilename": stored.path}
        if with_blobs:
            entry.update(size=stored.size, lfs={"sha256": stored.sha256, "size": stored.size, "pointerSize": 0})
        siblings.append(entry)
    when = (revision.released_at or revision.created_at).isoformat().replace("+00:00", "Z")
    return {
        "_id": f"{repo.pk:024x}",
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.org,
        "sha": revision.commit,
        "lastModified": when,
        "createdAt": repo.created_at.isoformat().replace("+00:00", "Z"),
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": "transformers",
        "siblings": siblings,
    }


@require_GET
@hf_endpoint
def model_info(request, org, name, rev="main"):
    repo = find_repo(request.hf_user, org, name)
    revision = resolve_revision(request.hf_user, repo, rev)
    return JsonResponse(revision_info(revision, with_blobs=request.GET.get("blobs") == "true"))


@require_GET
@hf_endpoint
def tree(request, org, name, rev, path=""):
    repo = find_repo(request.hf_user, org, name)
    revision = resolve_revision(request.hf_user, repo, rev)
    prefix = path.strip("/")
    recursive = request.GET.get("recursive", "").lower() in ("1", "true")
    entries, folders = [], set()
    for stored in revision.files.all():
        if prefix and not stored.path.startswith(prefix + "/"):
            continue
        below = stored.path[len(prefix) + 1 :] if prefix else stored.path
        parts = below.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if folder not in folders and (recursive or depth == 1):
                folders.add(folder)
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
        if len(parts) == 1 or recursive:
            entries.append(
                {
                    "type": "file",
                    "oid": stored.sha256[:40],
                    "size": stored.size,
                    "path": stored.path,
                    "lfs": {"oid": stored.sha256, "size": stored.size, "pointerSize": 0},
                }
            )
    if prefix and not entries:
        raise AccessDenied("EntryNotFound", f"{prefix} does not exist in revision {revision.commit}", 404)
    return JsonResponse(entries, safe=False)


@require_http_methods(["GET", "HEAD"])
@hf_endpoint
def resolve(request, org, name, rev, path):
    """HEAD answers the file's metadata; GET redirects to a short-lived link that serves the bytes."""
    user = request.hf_user
    stored, grant = locate_download(user, org, name, rev, path)
    if request.method == "HEAD" and rev != stored.revision.commit:
        # The client downloads from the URL its HEAD ended at: pinning `main` or a tag to the commit here
        # keeps a release that lands between its HEAD and its GET from mixing two revisions in its cache.
        pinned = reverse("hf-resolve", kwargs={"org": org, "name": name, "rev": stored.revision.commit, "path": path})
        return file_headers(HttpResponseRedirect(pinned, preserve_request=True), stored)
    if request.method == "HEAD":
        response = HttpResponse(status=200, content_type="application/octet-stream")
        response["Content-Length"] = str(stored.size)
        return file_headers(response, stored)
    token = request.hf_token
    if stored.revision.storage_backend == "local":
        ticket = issue_ticket(
            file_id=stored.pk,
            user_id=user.pk if user and user.is_authenticated else None,
            grant_id=grant.pk if grant else None,
            token_id=token.pk if token else None,
        )
        downloader = user if user is not None and user.is_authenticated else None
        # The ticket itself is a bearer credential: the log keeps what it allows, never its value.
        record(
            "distribution:ticket:issued",
            actor=downloader,
            subject=downloader,
            repo=stored.revision.repo,
            request=request,
            channel="hf-redirect",
            commit=stored.revision.commit,
            file=stored.path,
            expires_in_seconds=settings.DOWNLOAD_REDIRECT_SECONDS,
        )
        response = HttpResponseRedirect(reverse("download-ticket", args=[ticket, stored.filename]))
    else:
        reusable = fast_path.reusable(request, user=user, grant=grant, token=token)
        # The checks above are the full ones; for a reusable outcome only the event's writing is deferred.
        spooling = (
            fast_path.spooled_recorder(request, stored, user=user, grant=grant, token=token) if reusable else None
        )
        response = serve_file(request, stored, user=user, grant=grant, token=token, record_redirect=spooling)
        if reusable and response.status_code == 302:
            decision = fast_path.Decision(stored, user, grant, token, caller_key(request))
            fast_path.remember(request, decision)
    return file_headers(response, stored)


@require_http_methods(["GET", "HEAD"])
def ticket_download(request, ticket, filename):
    """The link a download is redirected to: the ticket alone authorizes it, checked again now."""
    try:
        claim = read_ticket(ticket, max_age=settings.DOWNLOAD_REDIRECT_SECONDS)
    except LinkRefused as refused:
        return hf_error(refused.status, refused.message)
    stored = RevisionFile.objects.select_related("revision__repo").filter(pk=claim.file_id).first()
    user = User.objects.filter(pk=claim.user_id, is_active=True).first() if claim.user_id else None
    if stored is None or stored.filename != filename or (claim.user_id and user is None):
        return hf_error(403, "this download link is not valid any more; ask for the file again")
    try:
        grant = permit_download(user, stored.revision.repo)
        resolve_revision(user, stored.revision.repo, stored.revision.commit)
    except AccessDenied as denied:
        return hf_error(403, f"this download link no longer works: {denied.message}", denied.code)
    token = ApiToken.objects.filter(pk=claim.token_id).first() if claim.token_id else None
    return serve_file(request, stored, user=user, grant=grant, token=token)


@require_GET
@hf_endpoint
def whoami(request):
    user, token = request.hf_user, request.hf_token
    if user is None:
        return hf_error(401, "Invalid credentials in Authorization header: send a portal token as a Bearer token")
    return JsonResponse(
        {
            "type": "user",
            "id": str(user.pk),
            "name": user.get_username(),
            "fullname": user.get_full_name() or user.get_username(),
            "email": user.email,
            "emailVerified": user.email_verified,
            "isPro": False,
            "canPay": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": token.name if token else "browser session",
                    "role": "read",
                    "createdAt": (token.created_at if token else user.date_joined).isoformat().replace("+00:00", "Z"),
                },
            },
        }
    )
