"""Repeated redirects to object storage, answered without the database.

Download clients ask for the same file again and again (a retry, a resume, `snapshot_download` run
twice, a cluster of nodes with one token). The first request for (token, repo, revision, file) goes
through every check; when it ends in a redirect to object storage, its outcome is kept in the
process for DOWNLOAD_DECISION_SECONDS. While it holds, the same request is answered from it: counted
against the rate limit (from a slice reserved in the shared cache), redirected to a presigned link
made for that file in the last half of its lifetime, and recorded through the event spool.

What this trades: a change of access made in one process reaches the others' decisions within
DOWNLOAD_DECISION_SECONDS (in the process that made it, at once). Links already handed out stay
valid for DOWNLOAD_REDIRECT_SECONDS whatever happens, so the window is far inside the one that
presigned links have always had. Grants with download caps, staff, browser sessions and local
storage always take the full checks.
"""

import hashlib
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from access.models import ApiToken, Grant, User
from distribution.models import Repo, Revision, RevisionFile
from distribution.storage import get_storage
from portal.audit import appended

# Audit tags that change nobody's access: downloads and links being handed out.
NEUTRAL_TAGS = ("distribution:download:", "distribution:ticket:")
MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class Decision:
    """What the full checks concluded, with the rows they loaded (read only from then on)."""

    stored: RevisionFile  # with its revision and repo
    user: User
    grant: Grant | None
    token: ApiToken
    caller_key: str


class Remembered:
    """A dictionary whose entries last `lifetime()` seconds, cleared as a whole when access changes."""

    def __init__(self, lifetime):
        self.lifetime = lifetime
        self.entries: dict = {}
        self.lock = threading.Lock()

    def get(self, key):
        entry = self.entries.get(key)
        if entry is None or time.monotonic() - entry[0] >= self.lifetime():
            return None
        return entry[1]

    def put(self, key, value) -> None:
        with self.lock:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries = {}
            self.entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self.lock:
            self.entries = {}


decisions = Remembered(lambda: settings.DOWNLOAD_DECISION_SECONDS)
# A presigned link is reused for half its life, so whoever receives it has at least the other half.
presigned_links = Remembered(lambda: settings.DOWNLOAD_REDIRECT_SECONDS / 2)


def enabled() -> bool:
    return settings.DOWNLOAD_DECISION_SECONDS > 0


def decision_key(request, *parts: str) -> tuple | None:
    """The bearer token (as a digest) and what it asks for; None for anything but a bearer token."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return (hashlib.sha256(header.encode()).digest(), *parts)


def remember(key: tuple, *, stored: RevisionFile, user, grant, token, caller_key: str) -> None:
    """Keep a full check's outcome for the next requests, when it is one the fast path may reuse."""
    capped = grant is not None and (grant.max_complete_downloads is not None or grant.max_bytes_per_day is not None)
    if user is None or not user.is_authenticated or user.is_staff or token is None or capped:
        return
    decisions.put(key, Decision(stored, user, grant, token, caller_key))


def presigned_link(stored: RevisionFile) -> str:
    key = (stored.revision.storage_backend, stored.storage_key, stored.filename)
    url = presigned_links.get(key)
    if url is None:
        url = get_storage(stored.revision.storage_backend).presigned_get(
            stored.storage_key, filename=stored.filename, expires_in=settings.DOWNLOAD_REDIRECT_SECONDS
        )
        presigned_links.put(key, url)
    return url


def forget() -> None:
    """Drop every decision now and again once the current transaction commits (a request racing the
    change could otherwise keep the old state)."""
    decisions.clear()
    transaction.on_commit(decisions.clear)


@receiver(appended)
def forget_on_access_change(sender, tags, **kwargs):
    if any(not tag.startswith(NEUTRAL_TAGS) for tag in tags):
        forget()


@receiver(post_save)
@receiver(post_delete)
def forget_on_save(sender, **kwargs):
    if sender in (User, Grant, ApiToken, Repo, Revision, RevisionFile):
        forget()
