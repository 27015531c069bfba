"""The names tasks had before they moved beside their domains (`workers.tasks.*`).

Messages queued under those names by an older web process or beat still arrive after an upgrade;
each is passed on under the task's name of today, which its route then sends to the right queue.
"""

from celery import shared_task

from access import tasks as access_tasks
from audit import tasks as audit_tasks
from distribution import tasks as distribution_tasks
from verification import tasks as verification_tasks

MOVED = [
    verification_tasks.verify_revision,
    verification_tasks.smoke_revision,
    verification_tasks.requeue_stuck_verifications,
    access_tasks.send_review_digests,
    access_tasks.record_expired_grants,
    audit_tasks.erase_old_origins,
    audit_tasks.check_audit_chain,
    distribution_tasks.store_spooled_downloads,
]


def forwarder(task):
    def forward(*args, **kwargs) -> None:
        task.apply_async(args, kwargs)

    forward.__doc__ = f"Queued under the old name: passed on to {task.name}."
    old_name = f"{__name__}.{task.name.rsplit('.', 1)[1]}"
    return shared_task(name=old_name, ignore_result=True)(forward)


FORWARDERS = [forwarder(task) for task in MOVED]
