"""The Celery app, configured from Django settings (CELERY_* names)."""

import os
import sys
from pathlib import Path

from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("weightgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


def worker_command(queues: str, hostname: str, *, beat: bool = False) -> list[str]:
    """The worker command line `make run` and the test suite start: one process, tasks one at a time.

    The solo pool and no gossip, mingle or heartbeat keep it working on the filesystem broker,
    which has no broadcast. `beat` runs the periodic jobs in the same process (one machine only).
    """
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel=info", f"--queues={queues}"]
    command += ["--pool=solo", "--without-gossip", "--without-mingle", "--without-heartbeat", f"--hostname={hostname}"]
    return command + (["--beat"] if beat else [])


# The embedded broker is a pair of folders; they must exist before the first message.
for _key in ("data_folder_in", "data_folder_out", "control_folder"):
    if _folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(_key):
        Path(_folder).mkdir(parents=True, exist_ok=True)
