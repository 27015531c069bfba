"""Serving stored bytes: single byte ranges from local files, presigned redirects to S3.

Every response that serves or redirects bytes writes one DownloadEvent before the first byte
goes out; a local download updates its byte count when the server closes the file, which it does
also when the client disconnects half-way.
"""

import contextlib
import functools
import re
import socket

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.utils import timezone

from distribution.models import DownloadEvent, RevisionFile
from distribution.storage import LocalStorage, get_storage
from portal import audit
from portal.models import AuditEvent

RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single range, None to send the whole file.

    Syntax we do not serve (several ranges, other units) is ignored as RFC 9110 allows;
    a well-formed range that starts past the end is unsatisfiable.
    """
    match = RANGE_PATTERN.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


class CountingFile:
    """A read-only window [start, end] of a file that counts what it hands out and reports on close.

    A WSGI server with sendfile (gunicorn) takes `fileno()` and sends the window itself, from the
    current position for Content-Length bytes, without a copy through Python; the count is then
    unknown and reported as None.
    """

    def __init__(self, path, start: int, end: int, on_close):
        self._handle = open(path, "rb")  # noqa: SIM115  (closed by close(), called by the server)
        self._handle.seek(start)
        self._remaining = end - start + 1
        self._on_close = on_close
        self.bytes_sent = 0
        self._read = False

    def fileno(self) -> int:
        return self._handle.fileno()

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size is None or size < 0 else min(size, self._remaining)
        self._read = True
        data = self._handle.read(size)
        self._remaining -= len(data)
        self.bytes_sent += len(data)
        return data

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
            self._on_close(self.bytes_sent if self._read or self._remaining <= 0 else None)


def corked(request):
    """The client's socket with TCP_CORK set, where the WSGI server hands it over (gunicorn does); else None.

    Corked, the kernel sends a file only in full segments, as nginx does with `tcp_nopush`: one
    loopback stream went from 1.9 to 2.3 GB/s. `uncork` must follow, or the file's last segment waits
    200 ms for more (and so would the next answer on a kept-alive connection).
    """
    client = request.META.get("gunicorn.socket")
    if client is None or not hasattr(socket, "TCP_CORK"):
        return None
    try:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except OSError:
        return None
    return client


def uncork(client) -> None:
    if client is not None:
        with contextlib.suppress(OSError):  # the client has gone: nothing is waiting
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def event_fields(request, stored: RevisionFile, *, user, grant, token, ticket=None, channel, status, expected) -> dict:
    """A DownloadEvent's values as ids and strings, so the event spool can keep them as JSON."""
    revision = stored.revision
    downloader = user if user is not None and user.is_authenticated else None
    return {
        "user_id": downloader.pk if downloader else None,
        "username": downloader.get_username() if downloader else "",
        "repo_id": revision.repo.repo_id,
        "grant_id": grant.pk if grant else None,
        "token_id": token.pk if token else None,
        "ticket_id": ticket.pk if ticket else None,
        "revision_id": revision.pk,
        "commit": revision.commit,
        "file_id": stored.pk,
        "path": stored.path,
        "channel": channel,
        "range_requested": request.META.get("HTTP_RANGE", "")[:200],
        "status": status,
        "bytes_expected": expected,
        **DownloadEvent.origin(request),
    }


def record_event(request, stored: RevisionFile, **details) -> DownloadEvent:
    """The DownloadEvent and its audit event, together or neither."""
    with transaction.atomic():
        event = DownloadEvent.objects.create(**event_fields(request, stored, **details))
        audit.append([served_event(event)])
    return event


def served_event(event: DownloadEvent) -> AuditEvent:
    """The audit event saying `event` was served, the same whether recorded at once or from the spool."""
    return AuditEvent(
        tag="distribution:download:served",
        created_at=event.created_at,
        actor_id=event.user_id,
        actor_username=event.username,
        subject_username=event.username,
        repo_id=event.repo_id,
        ip=event.ip,
        user_agent=event.user_agent,
        origin_digest=AuditEvent.digest_origin(event.ip, event.user_agent),
        data={
            "download_event": event.pk,
            "commit": event.commit,
            "path": event.path,
            "status": event.status,
            "range": event.range_requested,
            "channel": event.channel,
        },
    )


class LimitReached(Exception):
    pass


def check_caps(grant, stored: RevisionFile, *, whole: bool, expected: int) -> None:
    """Refuse a request past the grant's optional caps, before any byte goes out."""
    if grant is None:
        return
    events = DownloadEvent.objects.filter(grant=grant, status__in=(200, 206, 302))
    if grant.max_complete_downloads is not None and whole:
        fetched = events.filter(file=stored, range_requested="").count()
        if fetched >= grant.max_complete_downloads:
            raise LimitReached(
                f"your access allows {grant.max_complete_downloads} complete download(s) of "
                f"{stored.path}; ask the repo's reviewers to raise it"
            )
    if grant.max_bytes_per_day is not None:
        midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        today = events.filter(created_at__gte=midnight).aggregate(total=Sum("bytes_expected"))["total"] or 0
        if today + expected > grant.max_bytes_per_day:
            raise LimitReached(
                f"your access allows {grant.max_bytes_per_day} bytes a day and {today} were "
                "served today; the count starts again at 00:00 UTC"
            )


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


def serve_file(request, stored: RevisionFile, *, user, grant, token, ticket=None, record_redirect=None) -> HttpResponse:
    """Answer a GET or HEAD for a stored file: the bytes (local) or a presigned redirect (S3).

    `record_redirect(channel=, status=, expected=)` records an S3 redirect instead of `record_event`
    (distribution.fast_path passes one that writes to the event spool)."""
    storage = get_storage(stored.revision.storage_backend)
    record = functools.partial(record_event, request, stored, user=user, grant=grant, token=token, ticket=ticket)
    wanted = request.headers.get("Range", "")
    if request.method != "HEAD":
        try:
            check_caps(grant, stored, whole=not wanted, expected=stored.size)
        except LimitReached as limit:
            response = HttpResponse(str(limit), status=429, content_type="text/plain; charset=utf-8")
            response["X-Error-Message"] = str(limit)
            return response
    if not isinstance(storage, LocalStorage):
        url = storage.presigned_get(
            stored.storage_key, filename=stored.filename, expires_in=settings.DOWNLOAD_REDIRECT_SECONDS
        )
        if request.method != "HEAD":
            # What the link allows, counted against the daily cap; the bytes themselves go unseen.
            (record_redirect or record)(channel=DownloadEvent.Channel.S3_REDIRECT, status=302, expected=stored.size)
        return common_headers(HttpResponseRedirect(url), stored)

    if settings.X_ACCEL_REDIRECT_PREFIX:
        # The front server answers ranges and sends the file; the portal only decided who may have it.
        if request.method != "HEAD":
            record(channel=DownloadEvent.Channel.LOCAL, status=200, expected=stored.size)
        response = HttpResponse(content_type="application/octet-stream")
        response["X-Accel-Redirect"] = settings.X_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/" + stored.storage_key
        return common_headers(response, stored)

    size = stored.size
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
        event = record(channel=DownloadEvent.Channel.LOCAL, status=status, expected=length)
        client = corked(request)

        def on_close(sent: int) -> None:
            uncork(client)  # first: the last segment goes out now, not after the database update
            DownloadEvent.objects.filter(pk=event.pk).update(bytes_served=sent)

        body = CountingFile(storage.path(stored.storage_key), start, end, on_close)
        response = FileResponse(body, status=status, content_type="application/octet-stream")
    response["Content-Length"] = str(length)
    response["Content-Type"] = "application/octet-stream"
    if window:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return common_headers(response, stored)
