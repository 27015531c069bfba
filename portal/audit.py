"""Writing the audit trail: one call per change, from the service that makes it, appended to a
hash chain that `manage.py verify_audit_chain` checks."""

import logging

from django.db import IntegrityError, transaction

from portal.models import GENESIS, AuditChainHead, AuditEvent

HEAD = 1
log = logging.getLogger(__name__)


def locked_head() -> AuditChainHead:
    """The chain head, locked for this transaction (created on first use)."""
    head = AuditChainHead.objects.select_for_update().filter(pk=HEAD).first()
    if head is None:
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(pk=HEAD, sequence=0, last_hash=GENESIS)
        except IntegrityError:
            pass  # another writer made it first
        head = AuditChainHead.objects.select_for_update().get(pk=HEAD)
    return head


def record(tag: str, *, actor=None, subject=None, repo=None, request=None, **data) -> AuditEvent:
    actor = actor if actor is not None and actor.is_authenticated else None
    origin = AuditEvent.origin(request)
    with transaction.atomic():
        head = locked_head()
        event = AuditEvent(
            sequence=head.sequence + 1,
            previous_hash=head.last_hash,
            origin_digest=AuditEvent.digest_origin(origin.get("ip"), origin.get("user_agent")),
            tag=tag,
            actor=actor,
            actor_username=actor.get_username() if actor else "",
            subject_username=subject.get_username() if subject is not None else "",
            repo_id=repo.repo_id if repo is not None else "",
            data=data,
            **origin,
        )
        event.hash = event.compute_hash()
        event.save()
        AuditChainHead.objects.filter(pk=HEAD).update(sequence=event.sequence, last_hash=event.hash)
    return event


def first_break() -> str | None:
    """A sentence naming the first event edited, deleted or moved; None when the chain is whole."""
    expected_sequence, expected_previous = 1, GENESIS
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        if event.sequence != expected_sequence:
            return (
                f"event {expected_sequence} is missing (deleted, or its sequence changed): "
                f"the next one is {event.sequence}"
            )
        if event.previous_hash != expected_previous:
            return f"event {event.sequence} does not follow event {event.sequence - 1}: an event was removed or moved"
        if event.compute_hash() != event.hash:
            return f"event {event.sequence} ({event.tag}) was edited after it was written"
        expected_sequence, expected_previous = event.sequence + 1, event.hash
    head = AuditChainHead.objects.filter(pk=HEAD).first()
    if head is not None and (head.sequence, head.last_hash) != (expected_sequence - 1, expected_previous):
        return f"the chain should end at event {head.sequence} but ends at {expected_sequence - 1}: events were deleted"
    return None


def alert_if_broken() -> str | None:
    """Periodic: check the whole chain and mail every active staff member the first break found, if any."""
    from django.contrib.auth import get_user_model
    from django.core.mail import send_mail

    problem = first_break()
    if problem is None:
        return None
    log.error("audit chain broken: %s", problem)
    staff = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
    send_mail(
        "Weightgate: the audit log was altered",
        f"The daily check of the audit log's hash chain failed:\n\n  {problem}\n\n"
        "Someone with access to the database edited, deleted or reordered events. Keep a copy of the "
        "database as it is now, and run `python manage.py verify_audit_chain` to see the first altered event.",
        None,
        list(staff.values_list("email", flat=True)),
    )
    return problem
