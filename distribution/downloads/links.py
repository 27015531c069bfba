"""Download links for people who fetch with curl or wget: a manifest, SHA256SUMS and download.sh.

A link is a `DownloadTicket` row named by a random key; the URL carries the key signed with
SECRET_KEY (HMAC), so a rotated key keeps old links valid (SECRET_KEY_FALLBACKS) while only the
newest signs. Each request through a link is checked again: expiry, uses left, the grant, the
revision still released.
"""

import secrets
import shlex
from datetime import timedelta

from django.core import signing
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from access.gate import AccessDenied, permit_download, signed_in
from audit.chain import record
from audit.tags import Tag
from distribution import copies
from distribution.downloads.tickets import LinkRefused
from distribution.models import DownloadTicket, Revision, RevisionFile

SALT = "weightgate.download-link"


def repo_page(revision: Revision) -> str:
    return f"/{revision.repo.repo_id}"


def issue_link(user, grant, revision: Revision, file: RevisionFile | None = None, *, request=None) -> DownloadTicket:
    """A new link; asking again for the same files renews it (the older link works until it expires)."""
    repo = revision.repo
    previous = (
        DownloadTicket.objects.filter(user=user, revision=revision, file=file)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    with transaction.atomic():
        ticket = DownloadTicket.objects.create(
            key=secrets.token_urlsafe(24),
            user=user,
            grant=grant,
            revision=revision,
            file=file,
            expires_at=timezone.now() + timedelta(hours=repo.link_lifetime_hours),
            max_uses=repo.link_max_uses,
        )
        record(
            Tag.DOWNLOAD_TICKET_RENEWED if previous else Tag.DOWNLOAD_TICKET_ISSUED,
            actor=user,
            subject=user,
            repo=repo,
            request=request,
            ticket=ticket.pk,
            commit=revision.commit,
            file=file.path if file else None,
            expires_at=ticket.expires_at.isoformat(),
            max_uses=ticket.max_uses,
            **({"renews": previous} if previous else {}),
        )
    return ticket


def link_prefix(ticket: DownloadTicket) -> str:
    """The path every file of the ticket hangs under: <prefix>/<file path>."""
    signed = signing.Signer(salt=SALT).sign(ticket.key)
    return reverse("download-link", args=[signed, "x"])[:-2]


def redeem(signed: str, path: str, *, requester=None, count_use: bool = True) -> tuple[DownloadTicket, RevisionFile]:
    """The ticket and file a link request may be served, counting the use; LinkRefused says why not."""
    try:
        key = signing.Signer(salt=SALT).unsign(signed)
    except signing.BadSignature:
        raise LinkRefused("this download link is not valid: it was altered or cut; get a new one") from None
    ticket = DownloadTicket.objects.select_related("revision__repo", "user", "grant", "file").filter(key=key).first()
    if ticket is None:
        raise LinkRefused("this download link is not valid any more; get a new one")
    where = repo_page(ticket.revision)
    if signed_in(requester) and requester.pk != ticket.user_id:
        raise LinkRefused(f"this link belongs to another account; get your own at {where}")
    if ticket.expires_at <= timezone.now():
        raise LinkRefused(f"this link expired at {ticket.expires_at:%Y-%m-%d %H:%M} UTC: get a new link at {where}")
    if ticket.file_id and ticket.file.path != path:
        raise LinkRefused(f"this link is for {ticket.file.path} only", 404)
    stored = ticket.file or ticket.revision.files.filter(path=path).first()
    if stored is None:
        raise LinkRefused(f"revision {ticket.revision.commit[:12]} has no file {path}", 404)
    if ticket.revision.state != Revision.State.RELEASED:
        raise LinkRefused(
            f"revision {ticket.revision.commit[:12]} is {ticket.revision.state}, no longer released; see {where}"
        )
    if not ticket.user.is_active:
        raise LinkRefused("this link's account is disabled")
    try:
        grant = permit_download(ticket.user, ticket.revision.repo)
    except AccessDenied as denied:
        raise LinkRefused(f"this link no longer works: {denied.message}") from None
    if ticket.grant_id and (grant is None or grant.pk != ticket.grant_id):
        raise LinkRefused(f"the access this link was made for has ended; get a new link at {where}")
    if not count_use:  # a HEAD serves no bytes
        if ticket.uses >= ticket.max_uses:
            raise LinkRefused(f"this link has been used {ticket.max_uses} times, its limit: get a new link at {where}")
        return ticket, stored
    counted = DownloadTicket.objects.filter(pk=ticket.pk, uses__lt=F("max_uses")).update(uses=F("uses") + 1)
    if not counted:
        raise LinkRefused(f"this link has been used {ticket.max_uses} times, its limit: get a new link at {where}")
    return ticket, stored


def received(revision: Revision, user, grant) -> list[tuple[str, str, int]]:
    """(path, sha256, size) of every file as this person receives it: their own copy's, for a traceable
    revision (issued at this first ask if new)."""
    personal = copies.digests_for(revision, user, grant)
    listed = []
    for stored in revision.files.all():
        own = personal.get(stored.path, {"sha256": stored.sha256, "size": stored.size})
        listed.append((stored.path, own["sha256"], own["size"]))
    return listed


def manifest(ticket: DownloadTicket, base_url: str) -> dict:
    prefix = base_url + link_prefix(ticket)
    files = received(ticket.revision, ticket.user, ticket.grant)
    if ticket.file_id:
        files = [entry for entry in files if entry[0] == ticket.file.path]
    return {
        "repo": ticket.revision.repo.repo_id,
        "revision": ticket.revision.commit,
        "expires_at": ticket.expires_at.isoformat().replace("+00:00", "Z"),
        "max_uses": ticket.max_uses,
        "renew_at": base_url + repo_page(ticket.revision),
        "files": [
            {"path": path, "size": size, "sha256": sha256, "url": f"{prefix}/{path}"} for path, sha256, size in files
        ],
    }


def sha256sums(revision: Revision, user=None, grant=None) -> str:
    """The format `sha256sum -c` reads: the digest, two spaces, the path (of this person's copy)."""
    return "".join(f"{sha256}  {path}\n" for path, sha256, _ in received(revision, user, grant))


def download_script(ticket: DownloadTicket, base_url: str) -> str:
    listing = manifest(ticket, base_url)
    lines = "".join(f"{f['path']}|{f['size']}|{f['sha256']}\n" for f in listing["files"])
    # Every value goes into the script shell-quoted: nothing a file name holds can run as code.
    return render_to_string(
        "distribution/download.sh",
        {
            "m": listing,
            "generated": timezone.now(),
            "prefix_quoted": shlex.quote(base_url + link_prefix(ticket)),
            "renew_quoted": shlex.quote(listing["renew_at"]),
            "files_quoted": shlex.quote(lines),
        },
    )
