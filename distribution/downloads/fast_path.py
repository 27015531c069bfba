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
storage always take the full checks; a grant's expiry and a token's are honoured to the second.
"""

import hashlib
import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from access import gate
from access.models import ApiToken, Grant, User
from audit.chain import appended
from audit.tags import ACCESS_NEUTRAL
from distribution.downloads import channels, spool
from distribution.downloads.events import Downloader
from distribution.downloads.remembered import Remembered
from distribution.models import Repo, Revision, RevisionFile
from hub.errors import Unavailable
from hub.rate_limits import take, too_many_requests, with_limit_headers
from hub.routes import RESOLVE_ROUTE

RESOLVE = re.compile(RESOLVE_ROUTE)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What the full checks concluded, with the rows they loaded (read only from then on)."""

    stored: RevisionFile  # with its revision and repo
    who: Downloader
    caller_key: str


decisions = Remembered(lambda: settings.DOWNLOAD_DECISION_SECONDS)


def enabled() -> bool:
    return settings.DOWNLOAD_DECISION_SECONDS > 0


def decision_key(request, *parts: str) -> tuple | None:
    """The bearer token (as a digest) and what it asks for; None for anything but a bearer token."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Bearer "):
        return None
    return (hashlib.sha256(header.encode()).digest(), *parts)


def reusable(request, who: Downloader) -> bool:
    """Whether the full checks' outcome for this request may answer its repeats (and its event be spooled)."""
    return getattr(request, "decision_key", None) is not None and gate.decision_reusable(who.user, who.grant, who.token)


def remember(request, decision: Decision) -> None:
    """Keep a full check's outcome for the next requests; only for a request that is `reusable`."""
    decisions.put(request.decision_key, decision, generation=request.decision_generation)


def answer(request, decision: Decision):
    """The redirect the full checks would give, from `decision`; None to send the request through them."""
    stored, who = decision.stored, decision.who
    if not gate.grant_in_force(who.grant) or not gate.token_in_force(who.token):
        return None  # the full checks say so (and record a grant's end)
    allowed, remaining, reset = take(decision.caller_key)
    if not allowed:
        return with_limit_headers(too_many_requests(reset), remaining, reset)
    try:
        response = channels.redirect_to_storage(request, stored, who, spool.append_event)
    except OSError:
        log.exception("the download event spool cannot be written; checking and recording in full")
        return None
    except Unavailable:
        return None  # the full checks answer it (503, what the operators must do) and log it once
    return with_limit_headers(channels.file_headers(response, stored), remaining, reset)


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
    if any(tag not in ACCESS_NEUTRAL for tag in tags):
        forget()


@receiver(post_save)
@receiver(post_delete)
def forget_on_save(sender, **kwargs):
    if sender in (User, Grant, ApiToken, Repo, Revision, RevisionFile):
        forget()
