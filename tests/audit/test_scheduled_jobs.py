"""The audit's periodic jobs, recording expired grants and erasing old origins, are on the beat schedule."""

import pytest

from workers.celery import app

pytestmark = pytest.mark.django_db


def test_the_periodic_jobs_are_scheduled():
    scheduled = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert scheduled["access.tasks.record_expired_grants"] <= 3600
    assert scheduled["audit.tasks.erase_old_origins"] == 24 * 3600
