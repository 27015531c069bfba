"""Work retried once when the database connection is lost under it (a server restart, a failover, a
terminated backend), where doing it again is safe: a read-only decision, or a transaction that never
reached its commit (the server rolls back what a lost connection had written).

It sits at the bottom with the audit chain, whose appends are the writes every download waits on."""

from django.db import connection, transaction
from django.db.utils import InterfaceError, OperationalError

LOST = (InterfaceError, OperationalError)


def current():
    """The driver's connection this thread uses now (opened, and health-checked, if need be)."""
    connection.ensure_connection()
    return connection.connection


def gone(used) -> bool:
    """Whether the driver's connection that raised was lost, rather than a query refused on it. (Django
    may already have opened a new one, so the one that was used is asked, not the current one.)"""
    return bool(getattr(used, "broken", False) or getattr(used, "closed", False))


def decided_read_only(decide):
    """`decide()`, once more on a fresh connection if the connection died while it ran."""
    if connection.in_atomic_block:
        return decide()  # a transaction around it would lose its writes: never retried
    used = current()
    try:
        return decide()
    except LOST:
        if not gone(used):
            raise
        connection.close()
        return decide()


def committed_once(work, *, savepoint: bool = True, landed=None):
    """`work()` in one transaction, once more on a fresh connection if the connection died before the
    commit. Lost during the commit itself, the transaction may or may not have landed: `landed(result)`
    asks a fresh connection, and `work()` runs again only if it did not (without `landed`, the error
    stands). Inside another transaction it simply joins it: only the outermost one can be retried."""
    if connection.in_atomic_block:
        with transaction.atomic(savepoint=savepoint):
            return work()
    used = current()
    committing = False
    try:
        with transaction.atomic():
            result = work()
            committing = True
        return result
    except LOST:
        if not gone(used) or (committing and landed is None):
            raise
    connection.close()
    if committing and landed(result):
        return result
    with transaction.atomic():
        return work()
