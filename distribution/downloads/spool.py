"""Download events written to a local file on the request path, moved into the database in batches.

The fast path (distribution.downloads.fast_path) must not wait for PostgreSQL, yet every redirect it answers
must be recorded. Each web process appends one JSON line per event to its own file in
DOWNLOAD_SPOOL_DIR before it answers, and a thread of that process stores what was appended every
DOWNLOAD_SPOOL_FLUSH_SECONDS: the DownloadEvents and their audit events in one transaction, under
one lock of the audit chain's head.

Nothing is lost when a process dies: the lines are in the file (the kernel's page cache) as soon as
the request is answered. A process holds an exclusive lock on its file for its life; a file whose
lock is free belongs to a process that is gone, and the next process to start, or the periodic job,
stores it and removes it. Each line carries a key, so a batch stored twice is stored once.
"""

import atexit
import fcntl
import itertools
import json
import logging
import os
import secrets
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from access.models import ApiToken, Grant, User
from audit import chain
from audit.bulk_rows import insert_all
from distribution.downloads.events import Downloader, event_fields, record_event, served_event
from distribution.models import DownloadEvent, DownloadTicket, Revision, RevisionFile
from hub.metrics import SPOOL_BACKLOG, SPOOL_OLDEST_AGE

log = logging.getLogger(__name__)

ROTATE_BYTES = 8 * 1024 * 1024  # a file fully stored and this large starts again from empty
REFERENCES = {
    "user_id": User,
    "grant_id": Grant,
    "token_id": ApiToken,
    "revision_id": Revision,
    "file_id": RevisionFile,
    "ticket_id": DownloadTicket,
}
COPIED = ("username", "repo_id", "commit", "path", "channel", "range_requested", "status", "bytes_expected")


class SpoolKeys:
    """Keys unique across processes without a system call each: a random tag per process, then a count."""

    def __init__(self):
        self.restart()
        os.register_at_fork(after_in_child=self.restart)

    def restart(self) -> None:
        self.tag, self.count = secrets.token_hex(8), itertools.count()

    def __call__(self) -> str:
        return f"{self.tag}{next(self.count):x}"  # at most 32 characters, as spool_key allows


new_key = SpoolKeys()


def spooled_line(request, stored: RevisionFile, who: Downloader, **details) -> dict:
    """What `events.record_event` would store, as a line for the spool."""
    return {"key": new_key(), "at": timezone.now().isoformat(), **event_fields(request, stored, who, **details)}


def append_event(request, stored: RevisionFile, who: Downloader, **details) -> None:
    """Append the download event to this process's spool; OSError when the spool cannot be written."""
    spool().append(spooled_line(request, stored, who, **details))


def spool_or_store(request, stored: RevisionFile, who: Downloader, **details) -> None:
    """Append the download event to the spool or, when the spool cannot be written, store it now."""
    try:
        append_event(request, stored, who, **details)
    except OSError:  # a full disk, an unwritable directory
        log.exception("the download event spool cannot be written; recording in the database at once")
        record_event(request, stored, who, **details)


def readable(line: dict) -> bool:
    """Whether a line can be stored; one that cannot is logged whole and set aside, so it never blocks the rest."""
    try:
        usable = all(name in line for name in (*REFERENCES, *COPIED)) and parse_datetime(line["at"]) is not None
    except (KeyError, TypeError, ValueError):
        usable = False
    if not usable:
        log.error("a spooled download event cannot be stored and was set aside: %s", json.dumps(line)[:2000])
    return usable


def store(lines: list[dict]) -> int:
    """Store spooled events not stored before, each with its audit event; the number stored."""
    lines = list({line.get("key"): line for line in lines if readable(line)}.values())
    if not lines:
        return 0
    with transaction.atomic():
        present = held_references(lines)  # before the head: see there
        chain.locked_head()  # one writer at a time, so two shippers cannot both store a line
        keys = [line["key"] for line in lines]
        done = set(DownloadEvent.objects.filter(spool_key__in=keys).values_list("spool_key", flat=True))
        fresh = [line for line in lines if line["key"] not in done]
        if not fresh:
            return 0
        events = insert_all(
            DownloadEvent,
            [
                DownloadEvent(
                    spool_key=line["key"],
                    created_at=parse_datetime(line["at"]),
                    ip=line.get("ip"),  # absent when the request had no address
                    user_agent=line.get("user_agent", ""),
                    **{field: line[field] if line[field] in present[field] else None for field in REFERENCES},
                    **{name: line[name] for name in COPIED},
                )
                for line in fresh
            ],
        )
        chain.append([served_event(event) for event in events])
    return len(fresh)


def held_references(lines: list[dict]) -> dict[str, set]:
    """The rows the lines refer to that still exist, per field (a row deleted since the request, an account
    or a grant, leaves its event a null reference). On PostgreSQL they are key-locked here, as the events'
    foreign keys would lock them at the commit: taken before the chain's head, never while holding it (a
    verify worker holds its revision and then waits for the head), and none can be deleted meanwhile."""
    present = {}
    for field, model in REFERENCES.items():
        wanted = {line[field] for line in lines} - {None}
        rows = model.objects.filter(pk__in=wanted).values_list("pk", flat=True)
        if not wanted or connection.vendor != "postgresql":  # SQLite's writers go one at a time
            present[field] = set(rows)
            continue
        query, params = rows.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(query + " FOR KEY SHARE", params)
            present[field] = {pk for (pk,) in cursor.fetchall()}
    return present


def complete_lines(data: bytes) -> tuple[list[dict], int]:
    """The JSON lines in `data` up to its last newline, and how many bytes they take."""
    end = data.rfind(b"\n") + 1
    lines = []
    for raw in data[:end].splitlines():
        try:
            line = json.loads(raw)
        except ValueError:  # torn by a full disk, say: kept in the log, never in the way
            log.error("a spooled download event is not JSON and was set aside: %r", raw[:2000])
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines, end


class EventSpool:
    """This process's spool file: `append` on the request path, `ship` from its own thread."""

    def __init__(self, directory: Path, flush_seconds: float):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.flush_seconds, self.pid = directory, flush_seconds, os.getpid()
        self.path = directory / f"downloads-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for life: the file is in use
        self.lock = threading.Lock()  # appends, and the size they leave
        self.shipping = threading.Lock()  # one `ship` at a time: each carries on from where the last ended
        self.shipped = 0  # bytes of the file already stored
        self.oldest_waiting: float | None = None  # when the oldest line not yet stored was appended
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="download-event-spool", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def append(self, line: dict) -> None:
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        with self.lock:
            os.write(self.fd, data)
            self.oldest_waiting = self.oldest_waiting or time.monotonic()
        SPOOL_BACKLOG.inc()

    def ship(self) -> int:
        """Store what was appended since the last call; the number of events stored."""
        with self.shipping:
            with self.lock:
                size = os.fstat(self.fd).st_size if self.fd >= 0 else 0
            if size <= self.shipped:
                return 0
            if self.oldest_waiting is not None:
                SPOOL_OLDEST_AGE.set(time.monotonic() - self.oldest_waiting)
            with open(self.path, "rb") as handle:
                handle.seek(self.shipped)
                lines, used = complete_lines(handle.read(size - self.shipped))
            stored = store(lines)
            self.shipped += used
            SPOOL_BACKLOG.dec(len(lines))
            with self.lock:
                if os.fstat(self.fd).st_size == self.shipped:
                    self.oldest_waiting = None
                    SPOOL_OLDEST_AGE.set(0)
                if self.shipped >= ROTATE_BYTES and os.fstat(self.fd).st_size == self.shipped:
                    os.ftruncate(self.fd, 0)
                    self.shipped = 0
            return stored

    def _run(self) -> None:
        rounds = 0
        while not self.wake.wait(self.flush_seconds):
            try:
                if rounds % 600 == 0:  # at start, then now and then: files of processes that died
                    ship_orphans(self.directory)
                rounds += 1
                self.ship()
                close_old_connections()  # as a request would: kept for CONN_MAX_AGE, else closed
            except Exception:  # the lines stay in the file; the next round tries again
                log.exception("storing spooled download events failed; will retry")
                connection.close()  # a broken connection is replaced on the next try

    def close(self) -> None:
        if self.fd < 0:
            return
        atexit.unregister(self.close)
        self.wake.set()
        try:
            self.ship()
        except Exception:
            log.exception("storing spooled download events at exit failed; the next process will")
            return
        with self.lock:
            if os.fstat(self.fd).st_size == self.shipped:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


def ship_orphans(directory: Path, progress=lambda path, stored: None) -> int:
    """Store and remove the files of processes that are gone (their lock is free); the events stored.
    `progress(path, stored)` is told of each file once its events are stored."""
    stored = 0
    for path in sorted(directory.glob("downloads-*.jsonl")):
        try:
            handle = open(path, "rb")  # noqa: SIM115  (its lock lives as long as it is open)
        except FileNotFoundError:
            continue  # stored by another process meanwhile
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and ships it
            lines, _ = complete_lines(handle.read())
            stored += store(lines)
            path.unlink(missing_ok=True)
        progress(path, stored)
    return stored


_spool: EventSpool | None = None
_spool_lock = threading.Lock()


def spool() -> EventSpool:
    """This process's spool, made on first use (after a server forks its workers)."""
    global _spool

    def usable() -> bool:
        return _spool is not None and _spool.fd >= 0 and _spool.pid == os.getpid()

    if not usable():
        with _spool_lock:
            if not usable():
                _spool = EventSpool(Path(settings.DOWNLOAD_SPOOL_DIR), settings.DOWNLOAD_SPOOL_FLUSH_SECONDS)
    return _spool
