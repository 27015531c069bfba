"""The rest of the Hub's reading protocol, the calls tools built on the client make around downloads:
`auth_check`, `get_paths_info`, `list_repo_refs`, `list_repo_commits` and `list_models` (and, through
them, `HfFileSystem` and `hf cache verify`). Each answers only what access/gate.py lets the caller see,
and refuses in the Hub's shape, so the client raises the exceptions it raises against the Hub."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from access.endpoints import hf_endpoint
from access.gate import (
    AccessDenied,
    downloadable_revisions,
    find_repo,
    permit_download,
    repos_in_sight,
)
from distribution.downloads.locate import history, resolve_revision
from distribution.hf_entries import commit_entry, path_entries
from distribution.hf_model_properties import BadProperties, asked, described
from distribution.hf_views import changes_if, personal_digests
from distribution.models import Repo, Revision
from hub.errors import hf_error


@require_GET
@hf_endpoint
def auth_check(request, org, name):
    """200 when the caller may download the repo's files; else the refusal a download would get."""
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    permit_download(request.hf_user, repo, request.hf_token)
    return JsonResponse({})


@csrf_exempt
@require_POST
@hf_endpoint(reads_only=True)
def paths_info(request, org, name, rev):
    """What each of the form's `paths` is in the revision (files and folders; the others left out)."""
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    revision = resolve_revision(request.hf_user, repo, rev, request.hf_token)
    entries = path_entries(
        list(revision.files.all()),
        request.POST.getlist("paths"),
        personal=personal_digests(request, repo, revision),
        changes=changes_if(request.POST, request, repo, revision),
    )
    return JsonResponse(entries, safe=False)


@require_GET
@hf_endpoint
def refs(request, org, name):
    """`main`, the newest released revision, as the one branch; each tag of a revision the caller may name."""
    user, token = request.hf_user, request.hf_token
    repo = find_repo(user, org, name, token)
    main = newest_release(user, repo, token)
    branches = [ref("main", "refs/heads/main", main)] if main else []
    tagged = downloadable_revisions(user, repo, token).exclude(tag="").order_by("tag")
    tags = [ref(revision.tag, f"refs/tags/{revision.tag}", revision) for revision in tagged]
    return JsonResponse({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})


def ref(name: str, full_name: str, revision: Revision) -> dict:
    return {"name": name, "ref": full_name, "targetCommit": revision.commit}


@require_GET
@hf_endpoint
def commits(request, org, name, rev):
    """The revisions the caller may name from `rev` back to the first, newest first, one commit each."""
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    revision = resolve_revision(request.hf_user, repo, rev, request.hf_token)
    return JsonResponse(
        [commit_entry(older) for older in history(request.hf_user, repo, revision, request.hf_token)], safe=False
    )


# The Hub's sort keys this listing knows, each newest (or last by name) first as the Hub sorts them.
SORTS = {
    "createdAt": lambda repo, main: repo.created_at.isoformat(),
    "lastModified": lambda repo, main: main.released_at.isoformat() if main else "",
    "id": lambda repo, main: repo.repo_id,
}


@require_GET
@hf_endpoint
def models(request):
    """The repos the caller may see (never another), narrowed by `author` and `search` as the Hub narrows
    them; `sort` by createdAt, lastModified (newest first) or id; `limit`; `full`, `cardData`, `config`
    and `expand` as in model info. The Hub's tag filters (`filter`) match nothing: no repo here carries
    its tags."""
    user, token, params = request.hf_user, request.hf_token, request.GET
    try:
        wanted, only = asked(params)
    except BadProperties as error:
        return hf_error(400, str(error))
    author, search = params.get("author"), params.get("search", "").lower()
    found = [
        (repo, newest_release(user, repo, token))
        for repo in repos_in_sight(user, token)
        if (not author or repo.org == author) and search in repo.repo_id.lower() and not params.getlist("filter")
    ]
    if params.get("sort") in SORTS:
        found.sort(key=lambda pair: SORTS[params["sort"]](*pair), reverse=params["sort"] != "id")
    limit = params.get("limit", "")
    listed = found[: int(limit)] if limit.isdigit() else found
    return JsonResponse([described(repo, main, wanted, only) for repo, main in listed], safe=False)


def newest_release(user, repo: Repo, token) -> Revision | None:
    try:
        return resolve_revision(user, repo, "main", token)
    except AccessDenied:
        return None  # nothing released yet
