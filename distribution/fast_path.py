"""Repeated redirects to object storage, answered without the database.

Download clients ask for the same file again and again (a retry, a resume, `snapshot_download` run
twice, a cluster of nodes with one token). The first request for (token, repo, revision, file) goes
through every check; when it ends in a redirect to object storage, its outcome is kept in the
process for DOWNLOAD_DECISION_SECONDS. While it holds, the same request is answered from it by
RepeatedRedirectMiddleware, before sessions, CSRF and the URL resolver: counted against the rate
limit (from a slice reserved in the shared cache), redirected to a presigned link made for that
file in the last half of its lifetime, and recorded through the event spool. Once a decision has
lived three quarters of its time, one request checks again in full while the rest go on using it,
so a busy token's decision is renewed without every request of the moment going through the checks.
The full check's own event goes through the spool too, so no redirect of this kind waits on the
audit chain's head.

What this trades: a change of access made in one process reaches the others' decisions within
DOWNLOAD_DECISION_SECONDS (in the process that made it, at once). Links already handed out stay
valid for DOWNLOAD_REDIRECT_SECONDS whatever happens, so the window is far inside the one that
presigned links have always had. Grants with download caps, staff, browser sessions and local
storage always take the full checks; a grant's expiry is honoured to the second.
"""

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpResponseRedirect
from django.utils import timezone

from access.models import ApiToken, Grant, User
from distribution.event_spool import spool, spooled_line
from distribution.models import DownloadEvent, Repo, Revision, RevisionFile
from distribution.serving import common_headers, file_headers, record_event
from distribution.storage import get_storage
from portal.audit import appended
from portal.hf_protocol import RESOLVE_ROUTE
from portal.rate_limits import take, too_many_requests, with_limit_headers

# Audit tags that change nobody's access: downloads and links being handed out.
NEUTRAL_TAGS = ("distribution:download:", "distribution:ticket:")
# Each decision holds its rows (a file, its revision and repo, the account, grant and token): a few KB.
MAX_ENTRIES = 10_000
RESOLVE = re.compile(RESOLVE_ROUTE)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the full checks concluded, with the rows they loaded (read only from then on)."""

    stored: RevisionFile  # with its revision and repo
    user: User
    grant: Grant | None
    token: ApiToken
    caller_key: str


class Remembered:
    """A dictionary whose entries last `lifetime()` seconds, cleared as a whole when access changes.

    `lookup` also hands out refreshes: once an entry has lived REFRESH_AFTER of its life, one caller
    at a time is told to check again in full while the others go on using it, so a busy key never
    expires under its callers and sends them all through the full checks at once.
    """

    REFRESH_AFTER = 0.75

    def __init__(self, lifetime):
        self.lifetime = lifetime
        self.entries: dict = {}
        self.refreshing: set = set()
        self.generation = 0  # counts the clears, so a check that began before one is not kept after it
        self.lock = threading.Lock()

    def get(self, key):
        found = self.lookup(key, refresh=False)
        return found[0] if found else None

    def lookup(self, key, *, refresh: bool = True) -> tuple | None:
        """(value, whether this caller should check again and `put` or `release`), or None."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        age, lifetime = time.monotonic() - entry[0], self.lifetime()
        if age >= lifetime:
            return None
        if refresh and age >= lifetime * self.REFRESH_AFTER and key not in self.refreshing:
            with self.lock:
                if key not in self.refreshing:
                    self.refreshing.add(key)
                    return entry[1], True
        return entry[1], False

    def release(self, key, value) -> None:
        """End a refresh; the entry goes unless the check that refreshed it put a new one."""
        with self.lock:
            self.refreshing.discard(key)
            entry = self.entries.get(key)
            if entry is not None and entry[1] is value:
                del self.entries[key]

    def put(self, key, value, *, generation: int | None = None) -> None:
        with self.lock:
            if generation is not None and generation != self.generation:
                return  # access changed while the value was being worked out
            if len(self.entries) >= MAX_ENTRIES:  # expired entries are not removed until here
                now, lifetime = time.monotonic(), self.lifetime()
                self.entries = {k: entry for k, entry in self.entries.items() if now - entry[0] < lifetime}
                if len(self.entries) >= MAX_ENTRIES // 2:  # mostly live: start again rather than prune often
                    self.entries = {}
            self.entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self.lock:
            self.entries = {}
            self.generation += 1


decisions = Remembered(lambda: settings.DOWNLOAD_DECISION_SECONDS)
# A presigned link is reused for half its life, so whoever receives it has at least the other half.
presigned_links = Remembered(lambda: settings.DOWNLOAD_REDIRECT_SECONDS / 2)


def enabled() -> bool:
    return settings.DOWNLOAD_DECISION_SECONDS > 0


def decision_key(request, *parts: str) -> tuple | None:
    """The bearer token (as a digest) and what it asks for; None for anything but a bearer token."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Bearer "):
        return None
    return (hashlib.sha256(header.encode()).digest(), *parts)


def reusable(request, *, user, grant, token) -> bool:
    """Whether a redirect for this caller may be answered again from its decision, and recorded
    through the spool: a bearer token of an account that is not staff, under a grant without caps
    (a cap counts the events already in the database)."""
    capped = grant is not None and (grant.max_complete_downloads is not None or grant.max_bytes_per_day is not None)
    usable = user is not None and user.is_authenticated and not user.is_staff and token is not None
    return usable and not capped and getattr(request, "decision_key", None) is not None


def remember(request, decision: Decision) -> None:
    """Keep a full check's outcome for the next requests; only for a request that is `reusable`."""
    decisions.put(request.decision_key, decision, generation=request.decision_generation)


def spooled_recorder(request, stored: RevisionFile, *, user, grant, token):
    """`record_redirect` for serving.serve_file: the event goes to the spool, or, when the spool
    cannot be written, into the database at once."""

    def record_redirect(**details) -> None:
        if not spooled(request, stored, user=user, grant=grant, token=token, **details):
            record_event(request, stored, user=user, grant=grant, token=token, **details)

    return record_redirect


def spooled(request, stored: RevisionFile, **details) -> bool:
    """Append the download event to this process's spool; False when the spool cannot be written."""
    try:
        spool().append(spooled_line(request, stored, **details))
    except OSError:  # a full disk, an unwritable directory
        log.exception("the download event spool cannot be written; recording in the database at once")
        return False
    return True


def presigned_link(stored: RevisionFile) -> str:
    key = (stored.revision.storage_backend, stored.storage_key, stored.filename)
    url = presigned_links.get(key)
    if url is None:
        url = get_storage(stored.revision.storage_backend).presigned_get(
            stored.storage_key, filename=stored.filename, expires_in=settings.DOWNLOAD_REDIRECT_SECONDS
        )
        presigned_links.put(key, url)
    return url


def answer(request, decision: Decision):
    """The redirect the full checks would give, from `decision`; None to send the request through them."""
    grant = decision.grant
    if grant is not None and grant.expires_at is not None and grant.expires_at <= timezone.now():
        return None  # the full checks say so, and record the grant's end
    allowed, remaining, reset = take(decision.caller_key)
    if not allowed:
        return with_limit_headers(too_many_requests(reset), remaining, reset)
    stored = decision.stored
    if not spooled(
        request,
        stored,
        user=decision.user,
        grant=grant,
        token=decision.token,
        channel=DownloadEvent.Channel.S3_REDIRECT,
        status=302,
        expected=stored.size,
    ):
        return None  # checked and recorded in full instead
    response = file_headers(common_headers(HttpResponseRedirect(presigned_link(stored)), stored), stored)
    return with_limit_headers(response, remaining, reset)


class RepeatedRedirectMiddleware:
    """Answers a repeated GET of /ORG/NAME/resolve/REV/PATH from its decision, before the rest of the
    middleware and the URL resolver run, as WhiteNoise answers static files; all else passes through.

    Sessions, CSRF, messages and the like have nothing to do with a bearer-token redirect, and skipping
    them is most of what makes the repeat cheap. SecurityMiddleware, placed before this one, still
    adds its headers.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        route = RESOLVE.match(request.path_info[1:]) if request.method == "GET" and enabled() else None
        key = decision_key(request, *route.group("org", "name", "rev", "path")) if route else None
        if key is None:
            return self.get_response(request)
        # For the view to remember its outcome by; the generation is taken before anything is read.
        request.decision_key, request.decision_generation = key, decisions.generation
        found = decisions.lookup(key)
        if found is None:
            return self.get_response(request)
        decision, refresh = found
        try:
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware would check it
        except DisallowedHost:
            return self.get_response(request)  # which answers 400
        if refresh:  # this request checks in full for everyone; the others go on using the decision
            try:
                return self.get_response(request)
            finally:
                decisions.release(key, decision)
        return answer(request, decision) or self.get_response(request)


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
