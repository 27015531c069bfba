"""The Hub's publishing protocol, so `HfApi(endpoint=URL, token=T).create_repo(...)`, `upload_folder`,
`create_commit` and `hf upload` work against the portal for publishers (the publish scope, on a repo whose
publishers staff named). Files travel by the LFS batch API (HF_HUB_DISABLE_XET=1) or by Xet, the client's
default: `xet_write_token` hands it a token for the portal's own CAS calls (distribution.xet)."""

from celery import current_app
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from access.endpoints import hf_endpoint
from access.gate import find_repo, permit_publish
from distribution import hub_commits, lfs, xet
from distribution.hub_commits import VERIFY_TASK, CommitRefused
from distribution.models import Revision
from hub.bodies import json_object
from hub.errors import hf_error


def body_json(request) -> dict:
    try:
        return json_object(request.body)
    except ValueError as error:
        raise CommitRefused(str(error)) from None


def refusing(view):
    """Turn the publishing refusals into the Hub's error shape (JSON `error`, X-Error-Message)."""

    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except CommitRefused as refused:
            return hf_error(refused.status, refused.message, refused.code)
        except lfs.Refused as refused:
            return hf_error(refused.status, refused.message)

    wrapper.__name__, wrapper.__doc__ = view.__name__, view.__doc__
    return wrapper


def publishing_repo(request, org: str, name: str):
    """The repo the caller publishes to; AccessDenied (as the Hub words it) when they may not."""
    repo = find_repo(request.hf_user, org, name, request.hf_token)
    permit_publish(request.hf_user, repo, request.hf_token)
    return repo


def model_revision(rev: str) -> None:
    if rev not in ("main", "refs%2Fheads%2Fmain", "refs/heads/main"):
        raise CommitRefused(f"Invalid rev id: {rev}: commits go to main, the only branch", 404, "RevisionNotFound")


@csrf_exempt
@require_POST
@hf_endpoint
@refusing
def create_repo(request):
    """`POST /api/repos/create`: a model repo in an organisation, by staff or one of its publishers; 409
    with the repo's URL when it exists (the client's `exist_ok=True` takes that)."""
    body = body_json(request)
    org, name = body.get("organization"), body.get("name")
    if body.get("type") not in (None, "model"):
        raise CommitRefused("this portal holds model repos only")
    if not org or not isinstance(name, str):
        raise CommitRefused("give the repo as ORG/NAME: a repo belongs to an organisation here")
    private = body.get("private") is True or body.get("visibility") == "private"
    repo, created = hub_commits.create_repo(request.hf_user, request.hf_token, str(org), name, private=private)
    url = request.build_absolute_uri(f"/{repo.repo_id}")
    if not created:
        return JsonResponse({"error": "You already created this model repo", "url": url}, status=409)
    return JsonResponse({"url": url, "name": repo.repo_id, "id": f"{repo.pk:024x}"})


@csrf_exempt
@require_POST
@hf_endpoint
@refusing
def preupload(request, org, name, rev):
    """How each announced file travels (LFS or inline); refused kinds refused here, before any upload."""
    repo = publishing_repo(request, org, name)
    model_revision(rev)
    files = body_json(request).get("files")
    if not isinstance(files, list):
        raise CommitRefused("send the files as a list of {path, sample, size}")
    return JsonResponse({"files": hub_commits.upload_modes(repo, files), "commitOid": None})


def link_maker(request):
    def links(action: str, signed: str, number: int | None = None) -> str:
        kwargs = {"signed": signed, **({"number": number} if number is not None else {})}
        return request.build_absolute_uri(reverse(f"lfs-{action}", kwargs=kwargs))

    return links


@csrf_exempt
@require_POST
@hf_endpoint
@refusing
def lfs_batch(request, org, name):
    """`POST /ORG/NAME.git/info/lfs/objects/batch` for uploads: per object, nothing (already here) or
    where to send it (basic or multipart)."""
    repo = publishing_repo(request, org, name)
    body = body_json(request)
    if body.get("operation") != "upload":
        raise CommitRefused("downloads go through /ORG/NAME/resolve/...: this batch endpoint takes uploads")
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise CommitRefused("send the objects as a list of {oid, size}")
    answer = lfs.batch(repo, request.hf_user, objects, body.get("transfers"), link_maker(request))
    return JsonResponse(answer, content_type="application/vnd.git-lfs+json")


@csrf_exempt
@require_POST
@refusing
def lfs_complete(request, signed):
    """The multipart completion call (the signed link authorizes it, as the client sends no token here)."""
    lfs.complete_parts(lfs.signed_object(signed), body_json(request))
    return JsonResponse({})


@csrf_exempt
@require_POST
@hf_endpoint
@refusing
def lfs_verify(request, signed):
    """The verify step: 200 once the object is accepted (hashed whole, its oid); a single PUT to S3 is
    accepted here."""
    obj = lfs.signed_object(signed)
    permit_publish(request.hf_user, obj.repo, request.hf_token)
    body = body_json(request)
    if body.get("oid") not in (None, obj.oid):
        raise CommitRefused(f"this link verifies {obj.oid}, not {body.get('oid')}")
    lfs.accept(obj)
    return JsonResponse({})


@csrf_exempt
@require_http_methods(["PUT"])
@refusing
def lfs_object(request, signed):
    """Local storage: the whole object in one PUT, hashed as it is written, accepted or refused at once."""
    lfs.write_local(lfs.signed_object(signed), request, content_length(request))
    return HttpResponse(status=200)


@csrf_exempt
@require_http_methods(["PUT"])
@refusing
def lfs_part(request, signed, number):
    """Local storage: one part, written at its offset; its ETag is the MD5 of its bytes, as S3 gives."""
    etag = lfs.write_local(lfs.signed_object(signed), request, content_length(request), int(number))
    response = HttpResponse(status=200)
    response["ETag"] = f'"{etag}"'
    return response


def content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise CommitRefused("send the bytes with a Content-Length", 411) from None


@csrf_exempt
@require_POST
@hf_endpoint
@refusing
def commit(request, org, name, rev):
    """`POST /api/models/ORG/NAME/commit/main` (NDJSON): a new revision; verification queued when it is
    complete."""
    repo = publishing_repo(request, org, name)
    model_revision(rev)
    header, operations = hub_commits.parse_commit(request.read(hub_commits.COMMIT_MAX_BYTES + 1))
    revision = hub_commits.commit(repo, request.hf_user, header, operations, request=request)
    if revision.state == Revision.State.UPLOADED:
        transaction.on_commit(lambda: current_app.send_task(VERIFY_TASK, args=[revision.pk]))
    return JsonResponse(
        {
            "success": True,
            "commitOid": revision.commit,
            "commitUrl": request.build_absolute_uri(f"/{repo.repo_id}/commit/{revision.commit}"),
            "commitMessage": header.get("summary", ""),
            "pullRequestUrl": None,
        }
    )


@require_GET
@hf_endpoint
def xet_write_token(request, org, name, rev):
    """`GET /api/models/ORG/NAME/xet-write-token/REV`: where the client sends xorbs and shards (casUrl, the
    portal's own /xet/ORG/NAME), with a short-lived token for them; as JSON, which hf_xet reads, and as the
    headers huggingface_hub reads."""
    if request.hf_user is None:  # as every publishing call refuses the anonymous, before looking at the repo
        return hf_error(401, "Publishing takes a token (Authorization: Bearer ...).")
    repo = publishing_repo(request, org, name)
    token, expires = xet.issue_token(request.hf_user, repo, request.hf_token)
    cas_url = request.build_absolute_uri(reverse("xet-root", kwargs={"org": repo.org, "name": repo.name}))
    response = JsonResponse({"casUrl": cas_url.rstrip("/"), "accessToken": token, "exp": expires})
    response["X-Xet-Cas-Url"], response["X-Xet-Access-Token"] = cas_url.rstrip("/"), token
    response["X-Xet-Token-Expiration"] = str(expires)
    response["Cache-Control"] = "no-store"
    return response
