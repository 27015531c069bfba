"""The Celery app, configured from Django settings (CELERY_* names): which tasks exist, which queue
each goes to, and the periodic jobs. The tasks themselves live beside their domains (`*/tasks.py`)."""

import os
import sys
import time
from pathlib import Path

from celery import Celery
from celery.signals import task_success
from django.conf import settings
from django.core.cache import cache

from hub import request_ids  # noqa: F401  (tasks carry the request id of whoever sent them)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# DjangoTask adds delay_on_commit: a task sent from a transaction leaves only if it commits.
app = Celery("weightgate", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# `workers` holds the names the tasks had before they moved, for messages queued by older versions.
app.autodiscover_tasks(["access", "audit", "distribution", "mail", "verification", "portal", "workers"])

# Queues: `verify` for the CPU checks, `gpu` for the smoke pass, `mail`, and `default` for the rest.
app.conf.task_routes = {
    "verification.tasks.verify_revision": {"queue": "verify"},
    "verification.tasks.check_file": {"queue": "verify"},
    "verification.tasks.smoke_revision": {"queue": "gpu"},
    # Anchors are signed with the release key, which lives where the smoke pass signs releases.
    "portal.tasks.anchor_audit_chain": {"queue": "gpu"},
    # Mail never waits behind a verification that takes hours on the same worker.
    "mail.tasks.deliver": {"queue": "mail"},
}
app.conf.beat_schedule = {
    "requeue-stuck-verifications": {
        "task": "verification.tasks.requeue_stuck_verifications",
        "schedule": settings.REQUEUE_STUCK_EVERY_SECONDS,
    },
    "review-digests": {"task": "access.tasks.send_review_digests", "schedule": 24 * 3600},
    "expired-grants": {"task": "access.tasks.record_expired_grants", "schedule": 3600},
    "erase-old-origins": {"task": "audit.tasks.erase_old_origins", "schedule": 24 * 3600},
    "check-audit-chain": {"task": "audit.tasks.check_audit_chain", "schedule": 24 * 3600},
    "anchor-audit-chain": {"task": "portal.tasks.anchor_audit_chain", "schedule": settings.AUDIT_ANCHOR_SECONDS},
    "released-storage": {"task": "portal.tasks.check_released_storage", "schedule": 24 * 3600},
    "spooled-downloads": {"task": "distribution.tasks.store_spooled_downloads", "schedule": 60},
    "abandoned-drafts": {"task": "distribution.tasks.discard_abandoned_publishes", "schedule": 24 * 3600},
    "stuck-assemblies": {
        "task": "distribution.tasks.requeue_stuck_assemblies",
        "schedule": settings.REQUEUE_STUCK_EVERY_SECONDS,
    },
}


# Where a worker notes when each periodic job last succeeded, for /metrics (the cache is shared).
JOB_SUCCESS_KEY = "weightgate:job-succeeded:{job}"


def periodic_jobs() -> list[str]:
    return sorted(entry["task"] for entry in app.conf.beat_schedule.values())


def note_job_success(sender=None, **kwargs) -> None:
    if sender is not None and sender.name in periodic_jobs():
        cache.set(JOB_SUCCESS_KEY.format(job=sender.name), time.time(), timeout=None)


task_success.connect(note_job_success, weak=False)


def queues() -> list[str]:
    """Every queue a task is routed to, and the default one."""
    return sorted({route["queue"] for route in app.conf.task_routes.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue, as the broker counts them (a queue never used counts 0)."""
    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in queues():
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except Exception:  # kombu's transports differ in what they raise for a queue never declared
                depths[name] = 0
    return depths


def worker_arguments(queues: str, hostname: str, *, beat: bool = False) -> list[str]:
    """The worker `make run` and the test suite start, as `celery` arguments: one process, tasks one at a time.

    The solo pool and no gossip, mingle or heartbeat keep it working on the filesystem broker,
    which has no broadcast. `beat` runs the periodic jobs in the same process (one machine only).
    """
    arguments = ["worker", "--loglevel=info", f"--queues={queues}", "--pool=solo", "--without-gossip"]
    arguments += ["--without-mingle", "--without-heartbeat", f"--hostname={hostname}"]
    return arguments + (["--beat"] if beat else [])


def worker_command(queues: str, hostname: str, *, beat: bool = False) -> list[str]:
    """That worker's command line, for a process of its own."""
    return [sys.executable, "-m", "celery", "-A", "workers", *worker_arguments(queues, hostname, beat=beat)]


# The embedded broker is a pair of folders; they must exist before the first message.
for _key in ("data_folder_in", "data_folder_out", "control_folder"):
    if _folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(_key):
        Path(_folder).mkdir(parents=True, exist_ok=True)
