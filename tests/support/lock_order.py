"""Two transactions run at once in the order that once deadlocked: each in a thread on its own connection,
and a verify worker storing its verdict (its revision locked, then an audit event appended)."""

import threading
import time

from django.db import connection, transaction

from audit.chain import breaks, record
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import Revision


def started(work, failures: list) -> threading.Thread:
    """`work` in a thread of its own, on its own connection; what it raises goes to `failures`."""

    def run() -> None:
        try:
            work()
        except Exception as error:  # reported by the test
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def worker_storing_a_verdict(revision, locked: threading.Event | None = None, pause: float = 0) -> None:
    """As a verify worker storing its verdict: the revision's row locked (as `still_verifying` locks it, in any
    state), then, after `pause`, an audit event (TOKEN_CREATED, which nothing else in these tests records),
    in one transaction."""
    with transaction.atomic():
        Revision.objects.select_for_update().filter(pk=revision.pk).exists()
        if locked is not None:
            locked.set()
        time.sleep(pause)
        record(Tag.TOKEN_CREATED, number=1)


def both_committed(failures: list, *threads: threading.Thread) -> None:
    """The threads ended without an error, and the worker's audit event is on an unbroken chain."""
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert AuditEvent.objects.filter(tag=Tag.TOKEN_CREATED).count() == 1 and breaks() == []
