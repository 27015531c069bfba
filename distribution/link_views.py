"""Download links, the manifest, SHA256SUMS and download.sh: for people who fetch with curl or wget."""

import functools

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods

from access.gate import AccessDenied, find_repo, permit_download
from access.tokens import InvalidToken, authenticate
from distribution.downloads import channels, links
from distribution.downloads.events import Downloader
from distribution.downloads.locate import resolve_revision
from hub.errors import hf_error
from hub.rate_limits import rate_limited


def grantee_endpoint(view):
    """Authenticate (token or session), find the repo and revision the caller may download, or refuse."""

    @functools.wraps(view)
    def wrapper(request, org, name, rev):
        try:
            user, token = authenticate(request)
        except InvalidToken as error:
            return hf_error(401, str(error))
        if user is None:
            return hf_error(401, "sign in, or send a token: Authorization: Bearer <token>")
        try:
            repo = find_repo(user, org, name, token)
            grant = permit_download(user, repo, token)
            revision = resolve_revision(user, repo, rev, token)
        except AccessDenied as denied:
            return hf_error(denied.status, denied.message)
        return view(request, user, grant, revision)

    return wrapper


def base_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@require_GET
@grantee_endpoint
def manifest(request, user, grant, revision):
    """Every file with its size, sha256 and a fresh link (asking again renews the links)."""
    return JsonResponse(links.manifest(links.issue_link(user, grant, revision, request=request), base_url(request)))


@require_GET
@grantee_endpoint
def sha256sums(request, user, grant, revision):
    response = HttpResponse(links.sha256sums(revision, user, grant), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="SHA256SUMS"'
    return response


@require_GET
@grantee_endpoint
def download_script(request, user, grant, revision):
    script = links.download_script(links.issue_link(user, grant, revision, request=request), base_url(request))
    response = HttpResponse(script, content_type="text/x-shellscript; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="download.sh"'
    return response


@require_http_methods(["GET", "HEAD"])
@rate_limited(lambda request, signed, path: f"link:{signed}")
def link_download(request, signed, path):
    try:
        requester, token = authenticate(request)
    except InvalidToken as error:
        return hf_error(401, str(error))
    try:
        ticket, stored = links.redeem(signed, path, requester=requester, count_use=request.method != "HEAD")
    except links.LinkRefused as refused:
        response = hf_error(refused.status, refused.message)
        response.reason_phrase = refused.message.encode("latin-1", "replace").decode("latin-1")[:200]
        return response
    return channels.serve(request, stored, Downloader(ticket.user, ticket.grant, token, ticket))
