"""Who a download is for, and the DownloadEvent (with its audit event) that every answer serving
bytes or a link to them leaves before its first byte goes out."""

from dataclasses import dataclass

from access.gate import signed_in
from access.models import ApiToken, Grant, User
from audit import chain
from audit.connections import committed_once
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import DownloadEvent, DownloadTicket, RevisionFile


@dataclass(frozen=True)
class Downloader:
    """The account a download is for and what permitted it: the grant (None when none is needed), the
    token it came with, and the download link (DownloadTicket) it went through, if any."""

    user: User | None
    grant: Grant | None
    token: ApiToken | None
    ticket: DownloadTicket | None = None

    @property
    def account(self) -> User | None:
        """The signed-in account, None for an anonymous download of an open repo."""
        return self.user if signed_in(self.user) else None


def event_fields(request, stored: RevisionFile, who: Downloader, *, channel: str, status: int, expected) -> dict:
    """A DownloadEvent's values as ids and strings, so the event spool can keep them as JSON."""
    revision = stored.revision
    account = who.account
    return {
        "user_id": account.pk if account else None,
        "username": account.get_username() if account else "",
        "repo_id": revision.repo.repo_id,
        "grant_id": who.grant.pk if who.grant else None,
        "token_id": who.token.pk if who.token else None,
        "ticket_id": who.ticket.pk if who.ticket else None,
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


def record_event(request, stored: RevisionFile, who: Downloader, **details) -> DownloadEvent:
    """The DownloadEvent and its audit event, stored now, together or neither."""
    fields = event_fields(request, stored, who, **details)

    def stored_with_its_audit_event() -> DownloadEvent:
        event = DownloadEvent.objects.create(**fields)
        chain.append([served_event(event)])
        return event

    return committed_once(stored_with_its_audit_event, landed=is_stored)


def is_stored(event: DownloadEvent | None) -> bool:
    """Whether `event` is in the database: asked when the connection was lost during its commit."""
    return event is not None and DownloadEvent.objects.filter(pk=event.pk).exists()


def served_event(event: DownloadEvent) -> AuditEvent:
    """The audit event saying `event` was served, the same whether recorded at once or from the spool."""
    return AuditEvent(
        tag=Tag.DOWNLOAD_SERVED.value,
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
