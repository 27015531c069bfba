"""Writing the audit trail: one call per change, from the service that makes it, appended to a
hash chain that `manage.py verify_audit_chain` checks."""

import hmac
import logging
from collections.abc import Callable, Collection, Iterator

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.dispatch import Signal
from prometheus_client import Histogram

from audit.bulk_rows import insert_all
from audit.connections import committed_once
from audit.models import GENESIS, AuditChainHead, AuditEvent, UnknownChainKey, current_chain_key
from audit.tags import Tag
from mail.messages import alert_staff

HEAD = 1
# The head (row HEAD) locked after the keys are checked (and the actors' accounts key-locked, ACTORS), in one
# round trip; without parameters, since several statements in one query need the simple protocol, whatever
# binding is configured.
CHECK_KEYS = "SET CONSTRAINTS ALL IMMEDIATE"
LOCK_HEAD = "SELECT sequence, last_hash FROM portal_auditchainhead WHERE id = 1 FOR UPDATE"
# Which of the events' actors still have an account, key-locked so that none is deleted before the commit:
# the ids are integers, written into the statement as such.
ACTORS = "SELECT id FROM {table} WHERE id IN ({ids}) FOR KEY SHARE"
# Every writer waits here in turn: the first thing to look at when downloads slow down together.
HEAD_WAIT = Histogram(
    "weightgate_audit_chain_head_wait_seconds",
    "Time a writer waited for the lock of the audit chain's head",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
# Sent with `tags` once events are on the chain, so caches of who may do what can let go of them.
appended = Signal()
log = logging.getLogger(__name__)


def locked_head(actors: Collection[int] = ()) -> tuple[AuditChainHead, set[int]]:
    """The chain head, locked for this transaction (created on first use), and those of `actors` (account ids)
    whose accounts exist, which stay until the commit."""
    with HEAD_WAIT.time():
        head, present = locked_row(actors)
    if head is None:
        try:
            with transaction.atomic():
                AuditChainHead.objects.create(pk=HEAD, sequence=0, last_hash=GENESIS)
        except IntegrityError:
            pass  # another writer made it first
        head, present = locked_row(actors)
    return head, present


def locked_row(actors: Collection[int]) -> tuple[AuditChainHead | None, set[int]]:
    """The head's row, locked, and the actors whose accounts exist. On PostgreSQL the foreign keys of what the
    transaction wrote before are checked first, not at its commit, and the actors' accounts key-locked, as
    their events' foreign keys would lock them: these row locks (a download event's on its revision, an
    account's) are then taken before the head's, never after it, so a writer holding such a row (a worker's
    locked revision, an account being deleted) and waiting for the head cannot deadlock with this one. All
    go in one round trip: a second one cost a lone writer 6%."""
    if connection.vendor != "postgresql":  # SQLite's writers go one at a time: no lock to order
        present = set(get_user_model().objects.filter(pk__in=actors).values_list("pk", flat=True)) if actors else set()
        return AuditChainHead.objects.select_for_update().filter(pk=HEAD).first(), present
    statements = [CHECK_KEYS, LOCK_HEAD]
    if actors:
        table = connection.ops.quote_name(get_user_model()._meta.db_table)
        statements.insert(1, ACTORS.format(table=table, ids=",".join(str(int(actor)) for actor in sorted(actors))))
    with connection.cursor() as cursor:
        cursor.execute("; ".join(statements))
        cursor.nextset()
        present = set()
        if actors:
            present = {pk for (pk,) in cursor.fetchall()}
            cursor.nextset()
        row = cursor.fetchone()
    return (AuditChainHead(pk=HEAD, sequence=row[0], last_hash=row[1]) if row else None), present


def stable(value):
    """`value` with only what a JSON column gives back unchanged: strings, integers, booleans, null, and
    lists and objects of these. Anything else (a float, a date) is kept as its text, since the chain
    hashes the data as written and verifies it as read (PostgreSQL reads 1e16 back as an integer)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list | tuple):
        return [stable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): stable(item) for key, item in value.items()}
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def new_event(tag: Tag, *, actor=None, subject=None, repo=None, request=None, **data) -> AuditEvent:
    """An event not yet on the chain (see `append`)."""
    actor = actor if actor is not None and actor.is_authenticated else None
    origin = AuditEvent.origin(request)
    return AuditEvent(
        origin_digest=AuditEvent.digest_origin(origin.get("ip"), origin.get("user_agent")),
        tag=Tag(tag).value,  # a string that is no tag of the enumeration is refused here
        actor=actor,
        actor_username=actor.get_username() if actor else "",
        subject_username=subject.get_username() if subject is not None else "",
        repo_id=repo.repo_id if repo is not None else "",
        data=stable(data),
        **origin,
    )


def append(events: list[AuditEvent]) -> list[AuditEvent]:
    """Put `events` at the end of the chain, in order, under one lock of its head."""

    def chained() -> None:
        head, present = locked_head({event.actor_id for event in events if event.actor_id is not None})
        sequence, previous = head.sequence, head.last_hash
        key = current_chain_key()
        for event in events:
            if event.actor_id is not None and event.actor_id not in present:
                # deleted since: the event names them (actor_username, hashed) without the link, as their others
                event.actor = None
            sequence += 1
            event.sequence, event.previous_hash, event.chain_key = sequence, previous, key
            event.hash = previous = event.compute_hash()
        insert_all(AuditEvent, events)
        AuditChainHead.objects.filter(pk=HEAD).update(sequence=sequence, last_hash=previous)
        return previous

    def landed(last_hash: str) -> bool:
        return AuditEvent.objects.filter(hash=last_hash).exists()

    # No savepoint: its release would be one more round trip while every other writer waits on the head.
    committed_once(chained, savepoint=False, landed=landed)
    appended.send(sender=AuditEvent, tags=[event.tag for event in events])
    return events


def record(tag: Tag, *, actor=None, subject=None, repo=None, request=None, **data) -> AuditEvent:
    return append([new_event(tag, actor=actor, subject=subject, repo=repo, request=request, **data)])[0]


# Checks of the chain against what is kept outside the database (the signed anchors in storage), which
# live in layers above this one: each is a callable giving the breaks it finds, registered at start-up.
witnesses: list[Callable[[], Iterator[str]]] = []


def event_breaks(event: AuditEvent, expected_sequence: int, expected_previous: str, keyed_before: bool):
    """What is wrong with `event` where the chain expects `expected_sequence` after `expected_previous`."""
    if event.sequence != expected_sequence:
        yield (
            f"event {expected_sequence} is missing (deleted, or its sequence changed): the next one is {event.sequence}"
        )
    elif event.previous_hash != expected_previous:
        yield f"event {event.sequence} does not follow event {event.sequence - 1}: an event was removed or moved"
    try:
        if not hmac.compare_digest(event.compute_hash(), event.hash):
            yield f"event {event.sequence} ({event.tag}) was edited after it was written"
    except UnknownChainKey as error:
        yield str(error)
    if keyed_before and not event.chain_key:
        yield f"event {event.sequence} is chained without the key after keyed events: it was rewritten"
    if not event.origin_matches():
        yield f"event {event.sequence} ({event.tag}): its address or user agent was changed after it was written"


def chain_breaks() -> Iterator[str]:
    """Every break in the chain itself: each edited, deleted, moved or rewritten event, in order."""
    expected_sequence, expected_previous, keyed_before = 1, GENESIS, False
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        yield from event_breaks(event, expected_sequence, expected_previous, keyed_before)
        # Go on from the event as stored, so one break does not hide the ones after it.
        expected_sequence, expected_previous = event.sequence + 1, event.hash
        keyed_before = keyed_before or bool(event.chain_key)
    head = AuditChainHead.objects.filter(pk=HEAD).first()
    if head is not None and (head.sequence, head.last_hash) != (expected_sequence - 1, expected_previous):
        yield f"the chain should end at event {head.sequence} but ends at {expected_sequence - 1}: events were deleted"


def breaks() -> list[str]:
    """Every break found: in the chain, then against each witness kept outside the database."""
    found = list(chain_breaks())
    for witness in witnesses:
        found.extend(witness())
    return found


def first_break() -> str | None:
    """A sentence naming the first break; None when the chain is whole."""
    found = breaks()
    return found[0] if found else None


def alert_if_broken() -> str | None:
    """Periodic: check the whole chain and mail every active staff member the breaks found, if any."""
    found = breaks()
    if not found:
        return None
    log.error("audit chain broken in %d places: %s", len(found), found[0])
    alert_staff("audit_chain_broken", found)
    return "\n".join(found)
