"""How the bytes of a permitted download reach the client: one function per channel.

- `redirect_to_storage`: a 302 to a presigned link, made only while storage holds the file as it was
  verified; object storage (S3) sends the bytes.
- `redirect_to_ticket`: a 302 to the portal's own short-lived link (`/files/<ticket>/<name>`), which
  the Hub client follows for local files.
- `send_through_front_server`: X-Accel-Redirect; nginx sends the local file, ranges included.
- `send_local_file`: the portal sends a window of the local file itself, with HTTP ranges.

`serve` picks one for a request that has been permitted. Every answer that serves bytes or a link to
them records a DownloadEvent before its first byte goes out.
"""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse

from access.gate import AccessDenied, LimitReached, is_capped, within_caps
from audit.chain import record
from audit.tags import Tag
from distribution.downloads.events import Downloader, is_stored, record_event
from distribution.downloads.ranges import CountingFile, RangeNotSatisfiable, corked, parse_range, uncork
from distribution.downloads.remembered import Remembered
from distribution.downloads.tickets import issue_ticket
from distribution.models import DownloadEvent, RevisionFile
from distribution.storage import LocalStorage, StorageError, get_storage, recorded_version
from hub.errors import Unavailable, hf_error
from hub.metrics import DOWNLOAD_BYTES, DOWNLOADS, STORED_FILE_MISMATCHES

if TYPE_CHECKING:
    from distribution import copies

log = logging.getLogger(__name__)
OCTETS = "application/octet-stream"
# A presigned link is reused for half its life, so whoever receives it has at least the other half.
presigned_links = Remembered(lambda: settings.DOWNLOAD_REDIRECT_SECONDS / 2)


def serve(request, stored: RevisionFile, who: Downloader, *, record_redirect=record_event) -> HttpResponse:
    """Answer a permitted GET or HEAD for `stored`: the bytes, or a redirect to them.

    `record_redirect` stores the event of a redirect to object storage (the fast path spools it). A file
    that differs per recipient (a traceable copy's) is sent by the portal from any storage."""
    # Here, not at the top: this module loads with every process (the fast path's receivers), and copies
    # bring tracing and numpy, which only a download needs.
    from distribution import copies

    try:
        stored = copies.personal(stored, who, request=request)
    except AccessDenied as denied:
        return hf_error(denied.status, denied.message, denied.code)
    try:
        if getattr(stored, "copy_source", None) is not None:
            return send_copy(request, stored, who, requested_window(request, stored))
        if not is_local(stored):
            return redirect_to_storage(request, stored, who, record_redirect)
        window = requested_window(request, stored)
        if settings.X_ACCEL_REDIRECT_PREFIX:
            return send_through_front_server(request, stored, who, window)
        return send_local_file(request, stored, who, window)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{stored.size}"
        return common_headers(response, stored)
    except LimitReached as limit:
        response = HttpResponse(str(limit), status=429, content_type="text/plain; charset=utf-8")
        response["X-Error-Message"] = str(limit)
        return response


def is_local(stored: RevisionFile) -> bool:
    """Whether the portal (or its front server) sends the file, rather than object storage."""
    return isinstance(get_storage(stored.revision.storage_backend), LocalStorage)


@dataclass(frozen=True)
class Window:
    """The bytes of a file a request gets: one range, or all of it."""

    start: int
    end: int
    size: int
    ranged: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1 if self.size else 0

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end >= self.size - 1

    @property
    def status(self) -> int:
        return 206 if self.ranged else 200


def requested_window(request, stored: RevisionFile) -> Window:
    """The window a GET of a local file is answered with (RangeNotSatisfiable past the end)."""
    wanted = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range", "")
    # A range applies only to the version the client started with.
    if if_range and if_range.strip() != f'"{stored.sha256}"':
        wanted = ""
    window = parse_range(wanted, stored.size) if wanted else None
    start, end = window if window else (0, stored.size - 1)
    return Window(start, end, stored.size, ranged=window is not None)


def recorded(request, stored: RevisionFile, who: Downloader, *, whole: bool, record=record_event, **details):
    """The download's event, written before its first byte goes out and within its grant's caps, which
    count the events (LimitReached when the download would pass one; then nothing is written)."""
    repo, channel = stored.revision.repo.repo_id, details["channel"]
    try:
        event = within_caps(
            who.grant,
            stored,
            whole=whole,
            expected=details["expected"],
            record=lambda: record(request, stored, who, **details),
            landed=is_stored,
        )
    except LimitReached:
        DOWNLOADS.labels(repo=repo, channel=channel, outcome="capped").inc()
        raise
    DOWNLOADS.labels(repo=repo, channel=channel, outcome="served").inc()
    DOWNLOAD_BYTES.labels(repo=repo, channel=channel).inc(details["expected"])
    return event


def redirect_to_storage(request, stored: RevisionFile, who: Downloader, record_redirect) -> HttpResponse:
    # Each capped link is counted against the caps: it lives only long enough to start its one transfer.
    capped = is_capped(who.grant)
    link = fresh_link(stored, settings.CAPPED_LINK_SECONDS) if capped else presigned_link(stored)
    if request.method != "HEAD":
        # The link can fetch the whole file, so it counts as a whole download; the bytes go unseen.
        channel = DownloadEvent.Channel.S3_REDIRECT
        recorded(
            request, stored, who, whole=True, record=record_redirect, channel=channel, status=302, expected=stored.size
        )
    return common_headers(HttpResponseRedirect(link), stored)


def presigned_link(stored: RevisionFile) -> str:
    key = (stored.revision.storage_backend, stored.storage_key, stored.filename)
    url = presigned_links.get(key)
    if url is None:
        url = fresh_link(stored, settings.DOWNLOAD_REDIRECT_SECONDS)
        presigned_links.put(key, url)
    return url


class StoredFileChanged(Unavailable):
    """Object storage no longer holds a file as it was verified: no link to it is handed out."""


def fresh_link(stored: RevisionFile, seconds: int) -> str:
    """A link to the file in object storage, made only once storage shows it still holds the version that was
    verified, and naming that version where the bucket keeps versions (the VersionId verification read): a link
    to the key alone fetches whatever is there when it is used, so bytes put there since, or while the link
    lives, would go out unseen. In a versioned bucket a file written over or deleted is still served as
    verified, from its earlier version."""
    storage = get_storage(stored.revision.storage_backend)
    try:
        held = recorded_version(storage, stored.storage_key, stored.size, stored.stored_etag, stored.stored_version)
    except (OSError, StorageError) as error:
        raise Unavailable(
            f"{stored.path} cannot be handed out now: {storage.name} storage does not answer. Try again shortly.",
            f"checking {stored.storage_key} before presigning it failed: {error}",
        ) from error
    repo = stored.revision.repo.repo_id
    if held is None:
        STORED_FILE_MISMATCHES.labels(repo=repo, outcome="refused").inc()
        revision = stored.revision
        raise StoredFileChanged(
            f"{stored.path} of {repo} revision {revision.commit[:12]} is no longer in storage as "
            "it was verified (replaced, changed or gone), so no link to it is handed out. The operators must "
            "restore it from the publisher's copy or withdraw the revision; try again later.",
            f"{storage.name} key {stored.storage_key}: not the {stored.size} bytes of ETag {stored.stored_etag!r} "
            "that were verified, in any version storage keeps",
        )
    if not held.latest:
        STORED_FILE_MISMATCHES.labels(repo=repo, outcome="verified_version").inc()
        log.warning(
            "%s key %s no longer holds %s as verified (written over or deleted); links name the verified version "
            "%s, which the bucket keeps. Restore it.",
            storage.name,
            stored.storage_key,
            stored.path,
            held.version,
        )
    return storage.presigned_get(stored.storage_key, filename=stored.filename, expires_in=seconds, version=held.version)


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


def send_through_front_server(request, stored: RevisionFile, who: Downloader, window: Window) -> HttpResponse:
    """The front server answers the range and sends the file; the portal only decided who may have it."""
    if request.method != "HEAD":
        local = DownloadEvent.Channel.LOCAL
        recorded(request, stored, who, whole=window.whole, channel=local, status=window.status, expected=window.length)
    response = HttpResponse(content_type=OCTETS)
    response["X-Accel-Redirect"] = settings.X_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/" + stored.storage_key
    return common_headers(response, stored)


def send_window(request, stored: RevisionFile, who: Downloader, window: Window, respond) -> HttpResponse:
    """HEAD, or the window's bytes sent by the portal: its event recorded first, then `respond(event)`
    makes the response that carries them (and writes to the event what went out)."""
    if request.method == "HEAD":
        response = HttpResponse(status=window.status)
    else:
        event = recorded(
            request,
            stored,
            who,
            whole=window.whole,
            channel=DownloadEvent.Channel.LOCAL,
            status=window.status,
            expected=window.length,
        )
        response = respond(event)
    response["Content-Length"] = str(window.length)
    response["Content-Type"] = OCTETS
    if window.ranged:
        response["Content-Range"] = f"bytes {window.start}-{window.end}/{window.size}"
    return common_headers(response, stored)


def send_local_file(request, stored: RevisionFile, who: Downloader, window: Window) -> HttpResponse:
    def respond(event) -> HttpResponse:
        client = corked(request)

        def on_close(sent: int) -> None:
            uncork(client)  # first: the last segment goes out now, not after the database update
            DownloadEvent.objects.filter(pk=event.pk).update(bytes_served=sent)

        path = get_storage(stored.revision.storage_backend).path(stored.storage_key)
        body = CountingFile(path, window.start, window.end, on_close)
        return FileResponse(body, status=window.status, content_type=OCTETS)

    return send_window(request, stored, who, window, respond)


def send_copy(request, stored: RevisionFile, who: Downloader, window: Window) -> HttpResponse:
    """A window of a recipient's own copy: the shared prefix from the served base (local file or S3), the
    tail made in memory. Nothing per recipient is stored; no front server can send it, but where the WSGI
    server gives its socket (gunicorn) a local base's prefix goes out by sendfile, as an untraced file does."""
    source = stored.copy_source

    def respond(event) -> HttpResponse:
        start, end = window.start, window.end + 1 if window.length else window.start
        client = corked(request) if source.local_prefix(start, end) else None
        body = sent_copy(source, start, end, client, event)
        return StreamingHttpResponse(body, status=window.status, content_type=OCTETS)

    return send_window(request, stored, who, window, respond)


def sent_copy(source: "copies.CopySource", start: int, end: int, client, event):
    """Bytes [start, end) of a copy, with what went out written to the event at the end. Given the server's
    socket, the local prefix is sent from the file by the kernel: an empty piece first makes the server
    write the headers, then the prefix follows them on the socket, then the tail goes through the server."""
    sent = 0
    try:
        local = source.local_prefix(start, end) if client is not None else None
        if local is not None:
            path, first, last = local
            yield b""
            with open(path, "rb") as base:
                base.seek(first)
                try:
                    client.sendfile(base, first, last - first)
                finally:
                    sent += base.tell() - first
            start = last
        for piece in source.pieces(start, end) if start < end else ():
            sent += len(piece)
            yield piece
    finally:
        uncork(client)
        DownloadEvent.objects.filter(pk=event.pk).update(bytes_served=sent)


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
