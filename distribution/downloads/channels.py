"""How the bytes of a permitted download reach the client: one function per channel.

- `redirect_to_storage`: a 302 to a presigned link; object storage (S3) sends the bytes.
- `redirect_to_ticket`: a 302 to the portal's own short-lived link (`/files/<ticket>/<name>`), which
  the Hub client follows for local files.
- `send_through_front_server`: X-Accel-Redirect; nginx sends the local file, ranges included.
- `send_local_file`: the portal sends a window of the local file itself, with HTTP ranges.

`serve` picks one for a request that has been permitted. Every answer that serves bytes or a link to
them records a DownloadEvent before its first byte goes out.
"""

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from access.gate import LimitReached, check_caps
from audit.chain import record
from audit.tags import Tag
from distribution.downloads.events import Downloader, record_event
from distribution.downloads.ranges import CountingFile, RangeNotSatisfiable, corked, parse_range, uncork
from distribution.downloads.remembered import Remembered
from distribution.downloads.tickets import issue_ticket
from distribution.models import DownloadEvent, RevisionFile
from distribution.storage import LocalStorage, get_storage

OCTETS = "application/octet-stream"
# A presigned link is reused for half its life, so whoever receives it has at least the other half.
presigned_links = Remembered(lambda: settings.DOWNLOAD_REDIRECT_SECONDS / 2)


def serve(request, stored: RevisionFile, who: Downloader, *, record_redirect=record_event) -> HttpResponse:
    """Answer a permitted GET or HEAD for `stored`: the bytes, or a redirect to them.

    `record_redirect` stores the event of a redirect to object storage (the fast path spools it)."""
    if request.method != "HEAD":
        try:
            check_caps(who.grant, stored, whole=not request.headers.get("Range", ""), expected=stored.size)
        except LimitReached as limit:
            response = HttpResponse(str(limit), status=429, content_type="text/plain; charset=utf-8")
            response["X-Error-Message"] = str(limit)
            return response
    if not is_local(stored):
        return redirect_to_storage(request, stored, who, record_redirect)
    if settings.X_ACCEL_REDIRECT_PREFIX:
        return send_through_front_server(request, stored, who)
    return send_local_file(request, stored, who)


def is_local(stored: RevisionFile) -> bool:
    """Whether the portal (or its front server) sends the file, rather than object storage."""
    return isinstance(get_storage(stored.revision.storage_backend), LocalStorage)


def redirect_to_storage(request, stored: RevisionFile, who: Downloader, record_redirect) -> HttpResponse:
    if request.method != "HEAD":
        # What the link allows, counted against the daily cap; the bytes themselves go unseen.
        record_redirect(
            request, stored, who, channel=DownloadEvent.Channel.S3_REDIRECT, status=302, expected=stored.size
        )
    return common_headers(HttpResponseRedirect(presigned_link(stored)), stored)


def presigned_link(stored: RevisionFile) -> str:
    key = (stored.revision.storage_backend, stored.storage_key, stored.filename)
    url = presigned_links.get(key)
    if url is None:
        url = get_storage(stored.revision.storage_backend).presigned_get(
            stored.storage_key, filename=stored.filename, expires_in=settings.DOWNLOAD_REDIRECT_SECONDS
        )
        presigned_links.put(key, url)
    return url


def redirect_to_ticket(request, stored: RevisionFile, who: Downloader) -> HttpResponse:
    """A 302 to the portal's own link for a local file, signed for this person, grant and token."""
    ticket = issue_ticket(
        file_id=stored.pk,
        user_id=who.account.pk if who.account else None,
        grant_id=who.grant.pk if who.grant else None,
        token_id=who.token.pk if who.token else None,
    )
    # The ticket itself is a bearer credential: the log keeps what it allows, never its value.
    record(
        Tag.REDIRECT_TICKET_ISSUED,
        actor=who.account,
        subject=who.account,
        repo=stored.revision.repo,
        request=request,
        channel="hf-redirect",
        commit=stored.revision.commit,
        file=stored.path,
        expires_in_seconds=settings.DOWNLOAD_REDIRECT_SECONDS,
    )
    return HttpResponseRedirect(reverse("download-ticket", args=[ticket, stored.filename]))


def send_through_front_server(request, stored: RevisionFile, who: Downloader) -> HttpResponse:
    """The front server answers ranges and sends the file; the portal only decided who may have it."""
    if request.method != "HEAD":
        record_event(request, stored, who, channel=DownloadEvent.Channel.LOCAL, status=200, expected=stored.size)
    response = HttpResponse(content_type=OCTETS)
    response["X-Accel-Redirect"] = settings.X_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/" + stored.storage_key
    return common_headers(response, stored)


def send_local_file(request, stored: RevisionFile, who: Downloader) -> HttpResponse:
    size = stored.size
    wanted = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range", "")
    # A range applies only to the version the client started with.
    if if_range and if_range.strip() != f'"{stored.sha256}"':
        wanted = ""
    try:
        window = parse_range(wanted, size) if wanted else None
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return common_headers(response, stored)
    start, end = window if window else (0, size - 1)
    status = 206 if window else 200
    length = end - start + 1 if size else 0

    if request.method == "HEAD":
        response = HttpResponse(status=status)
    else:
        event = record_event(request, stored, who, channel=DownloadEvent.Channel.LOCAL, status=status, expected=length)
        client = corked(request)

        def on_close(sent: int) -> None:
            uncork(client)  # first: the last segment goes out now, not after the database update
            DownloadEvent.objects.filter(pk=event.pk).update(bytes_served=sent)

        path = get_storage(stored.revision.storage_backend).path(stored.storage_key)
        response = FileResponse(CountingFile(path, start, end, on_close), status=status, content_type=OCTETS)
    response["Content-Length"] = str(length)
    response["Content-Type"] = OCTETS
    if window:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return common_headers(response, stored)


def common_headers(response: HttpResponse, stored: RevisionFile) -> HttpResponse:
    response["ETag"] = f'"{stored.sha256}"'
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = f'attachment; filename="{stored.filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def file_headers(response: HttpResponse, stored: RevisionFile) -> HttpResponse:
    """What the Hugging Face client reads off any answer about a file: its commit, digest and size."""
    response["X-Repo-Commit"] = stored.revision.commit
    response["X-Linked-Etag"] = f'"{stored.sha256}"'
    response["X-Linked-Size"] = str(stored.size)
    response["ETag"] = f'"{stored.sha256}"'
    response["Accept-Ranges"] = "bytes"
    return response
