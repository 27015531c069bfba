"""What reviewers and staff see happen in their repos: downloads and access requests per day."""

from datetime import date, datetime, time, timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from access.models import AccessRequest
from distribution.models import DownloadEvent

DAYS = 30


def daily(rows, days: list[date]) -> list[int]:
    counted = {
        row["day"]: row["count"]
        for row in rows.annotate(day=TruncDate("created_at")).values("day").annotate(count=Count("id"))
    }
    return [counted.get(day, 0) for day in days]


def activity(repos, today: date | None = None) -> dict:
    """Downloads and access requests of the last DAYS days in `repos` (a queryset; None: every repo)."""
    today = today or timezone.localdate()
    days = [today - timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]
    since = datetime.combine(days[0], time.min, tzinfo=timezone.get_current_timezone())
    downloads = DownloadEvent.objects.filter(created_at__gte=since)
    requests = AccessRequest.objects.filter(created_at__gte=since)
    if repos is not None:
        downloads = downloads.filter(repo_id__in=[repo.repo_id for repo in repos])
        requests = requests.filter(repo__in=repos)
    return {"days": days, "downloads": daily(downloads, days), "requests": daily(requests, days)}
