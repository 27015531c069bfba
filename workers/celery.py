"""The Celery app, configured from Django settings (CELERY_* names)."""

import os
from pathlib import Path

from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("weightgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

# The embedded broker is a pair of folders; they must exist before the first message.
for _key in ("data_folder_in", "data_folder_out", "control_folder"):
    if _folder := settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(_key):
        Path(_folder).mkdir(parents=True, exist_ok=True)
