"""The audit's periodic jobs, recording expired grants and erasing old origins, are on the beat schedule."""

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db


def test_the_periodic_jobs_are_scheduled():
    scheduled = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled["workers.tasks.record_expired_grants"] <= 3600
    assert scheduled["workers.tasks.erase_old_origins"] == 24 * 3600
