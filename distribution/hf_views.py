"""The Hugging Face Hub download protocol, so `snapshot_download`, `hf_hub_download` and `hf download`
work against the portal with `endpoint=<portal URL>` and a portal token."""

from django.conf import settings
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from access.endpoints import hf_endpoint
from access.gate import (
    AccessDenied,
    find_repo,
    may_publish,
    permit_download,
    powers,
    reads_gated_repos,
    token_in_force,
)
from access.models import ApiToken, Scope, User
from audit.connections import decided_read_only
from distribution import copies, hub_commits
from distribution.downloads import channels, fast_path, spool
from distribution.downloads.events import Downloader, record_event
from distribution.downloads.locate import history, locate_download, resolve_revision
from distribution.downloads.tickets import LinkRefused, read_ticket
from distribution.hf_entries import as_received, hub_time, last_changes, tree_entries
from distribution.hf_model_properties import BadProperties, asked, described
from distribution.models import Revision, RevisionFile
from hub.errors import hf_error
from hub.rate_limits import caller_key


def revision_info(
    revision: Revision, *, with_blobs: bool, personal: dict | None = None, wanted=("siblings",), only=False
) -> dict:
    """Model info of a revision: the repo's entry with its files (`with_blobs`: their sizes and digests, as
    this person receives them) and whatever else `wanted` names (only those, when `only`)."""
    repo = revision.repo
    siblings = []
    for stored in revision.files.all():
        entry = {"rfilename": stored.path}
        if with_blobs:
            sha256, size = as_received(stored, personal or {})
            entry.update(size=size, lfs={"sha256": sha256, "size": size, "pointerSize": 0})
        siblings.append(entry)
    return described(repo, revision, set(wanted), only, siblings=siblings)


@require_GET
@hf_endpoint
def model_info(request, org, name, rev="main"):
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    revision = described_revision(request, repo, rev)
    try:
        wanted, only = asked(request.GET)
    except BadProperties as error:
        return hf_error(400, str(error))
    with_blobs = request.GET.get("blobs") == "true"
    personal = personal_digests(request, repo, revision) if with_blobs else {}
    wanted = wanted if only else wanted | {"siblings"}  # model info lists the files unless `expand` chose
    return JsonResponse(revision_info(revision, with_blobs=with_blobs, personal=personal, wanted=wanted, only=only))


def described_revision(request, repo, rev: str) -> Revision:
    """`main` is, for whoever publishes to the repo, its head: the commit their next one builds on, released
    or not, as on the Hub (the client describes it after a commit with nothing new); for everyone else the
    newest release. Describing is all: downloads name revisions as downloadable_revisions allows."""
    if rev == "main" and may_publish(request.hf_user, repo, request.hf_token):
        head = hub_commits.head_revision(repo)
        if head is not None:
            return head
    return resolve_revision(request.hf_user, repo, rev, request.hf_token)


def personal_digests(request, repo, revision: Revision) -> dict:
    """What this caller's copy of a traceable revision holds (issuing it if new); {} for any other."""
    if not repo.traceable:
        return {}
    grant = permit_download(request.hf_user, repo, request.hf_token)
    return copies.digests_for(revision, request.hf_user, grant, request=request)


@require_GET
@hf_endpoint
def tree(request, org, name, rev, path=""):
    """The files and folders under `path`; `recursive` lists every level, `expand` adds each one's lastCommit."""
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    revision = resolve_revision(request.hf_user, repo, rev, request.hf_token)
    prefix = path.strip("/")
    files = list(revision.files.all())
    entries = tree_entries(
        files,
        prefix,
        recursive=flag(request.GET, "recursive"),
        personal=personal_digests(request, repo, revision),
        changes=changes_if(request.GET, request, repo, revision),
    )
    if prefix and not entries:
        raise AccessDenied("EntryNotFound", f"{prefix} does not exist in revision {revision.commit}", 404)
    return paged(request, entries, settings.HUB_TREE_PAGE_SIZE)


def paged(request, entries: list, size: int) -> JsonResponse:
    """One page of a listing, and the next page's URL in a `Link` header as the Hub gives it (the client
    follows it); the cursor is the position to go on from, opaque to the client."""
    cursor = request.GET.get("cursor", "0")
    if not cursor.isdigit() or int(cursor) > len(entries):
        return hf_error(400, f"the cursor {cursor!r} is not one this listing gave: list again from the start")
    start = int(cursor)
    response = JsonResponse(entries[start : start + size], safe=False)
    if start + size < len(entries):
        following = request.GET.copy()
        following["cursor"] = str(start + size)
        response["Link"] = f'<{request.build_absolute_uri(request.path)}?{following.urlencode()}>; rel="next"'
    return response


def flag(params, name: str) -> bool:
    return params.get(name, "").lower() in ("1", "true")


def changes_if(params, request, repo, revision: Revision) -> dict | None:
    """The revision that last changed each file, when the call asks to `expand`; else None."""
    if not flag(params, "expand"):
        return None
    return last_changes(history(request.hf_user, repo, revision, request.hf_token))


@require_http_methods(["GET", "HEAD"])
@hf_endpoint
def resolve(request, org, name, rev, path):
    """HEAD answers the file's metadata; GET redirects to a short-lived link that serves the bytes."""
    stored, grant = decided_read_only(lambda: locate_download(request.hf_user, org, name, rev, path, request.hf_token))
    who = Downloader(request.hf_user, grant, request.hf_token)
    stored = copies.personal(stored, who, request=request)  # a traceable revision's file: this person's copy
    if request.method == "HEAD" and rev != stored.revision.commit:
        # The client downloads from the URL its HEAD ended at: pinning `main` or a tag to the commit here
        # keeps a release that lands between its HEAD and its GET from mixing two revisions in its cache.
        pinned = reverse("hf-resolve", kwargs={"org": org, "name": name, "rev": stored.revision.commit, "path": path})
        return channels.file_headers(HttpResponseRedirect(pinned, preserve_request=True), stored)
    if request.method == "HEAD":
        response = HttpResponse(status=200, content_type=channels.OCTETS)
        response["Content-Length"] = str(stored.size)
        return channels.file_headers(response, stored)
    if channels.is_local(stored):
        return channels.file_headers(channels.redirect_to_ticket(request, stored, who), stored)
    # The checks above are the full ones; for a reusable outcome only the event's writing is deferred.
    reusable = fast_path.reusable(request, who)
    response = channels.serve(request, stored, who, record_redirect=spool.spool_or_store if reusable else record_event)
    if reusable and response.status_code == 302:
        fast_path.remember(request, fast_path.Decision(stored, who, caller_key(request)))
    return channels.file_headers(response, stored)


@require_http_methods(["GET", "HEAD"])
def ticket_download(request, ticket, filename):
    """The link a download is redirected to: the ticket alone authorizes it, checked again now."""
    try:
        claim = read_ticket(ticket, max_age=settings.DOWNLOAD_REDIRECT_SECONDS)
        stored, who = decided_read_only(lambda: ticket_holder(claim, filename))
    except LinkRefused as refused:
        return hf_error(refused.status, refused.message)
    except AccessDenied as denied:
        return hf_error(403, f"this download link no longer works: {denied.message}", denied.code)
    return channels.serve(request, stored, who)


def ticket_holder(claim, filename: str) -> tuple[RevisionFile, Downloader]:
    """The file a redirect ticket names and who it was issued to, if they may still have it."""
    stored = RevisionFile.objects.select_related("revision__repo").filter(pk=claim.file_id).first()
    user = User.objects.filter(pk=claim.user_id, is_active=True).first() if claim.user_id else None
    if stored is None or stored.filename != filename or (claim.user_id and user is None):
        raise LinkRefused("this download link is not valid any more; ask for the file again")
    token = ApiToken.objects.filter(pk=claim.token_id).first() if claim.token_id else None
    if claim.token_id and not token_in_force(token):
        raise LinkRefused("the token this download was asked with was revoked or expired; ask again with a live one")
    grant = permit_download(user, stored.revision.repo, token)
    resolve_revision(user, stored.revision.repo, stored.revision.commit, token)
    return stored, Downloader(user, grant, token)


# Our scopes in the Hub's fine-grained vocabulary. The admin scope has no Hub counterpart: what it adds
# shows as the repos (every one) where the token reads, reviews or publishes.
HUB_PERMISSIONS = {
    Scope.READ: ["repo.content.read"],
    Scope.REVIEW: ["repo.access.read", "repo.access.write"],
    Scope.PUBLISH: ["repo.write"],
}


def fine_grained(user, token) -> dict:
    """What the token may do, as the Hub writes a fine-grained token's permissions: repo by repo."""
    return {
        "canReadGatedRepos": reads_gated_repos(token),
        "global": [],
        "scoped": [
            {
                "entity": {"_id": f"{repo.pk:024x}", "type": "model", "name": repo.repo_id},
                "permissions": [permission for scope in scopes for permission in HUB_PERMISSIONS[scope]],
            }
            for repo, scopes in powers(user, token)
        ],
    }


@require_GET
@hf_endpoint
def whoami(request):
    """Who the token belongs to and, in the Hub's fine-grained format, what it may do (never more than its
    owner may); `expiresAt`, which the Hub does not send, says when it stops working."""
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
                    "role": "fineGrained",
                    "createdAt": hub_time(token.created_at if token else user.date_joined),
                    "expiresAt": hub_time(token.expires_at if token else None),
                    "fineGrained": fine_grained(user, token),
                },
            },
        }
    )
