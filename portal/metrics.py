"""/metrics for Prometheus: what the web processes counted (hub.metrics, summed over gunicorn's workers
in multi-process mode), and what is read when Prometheus asks: pending access requests and the oldest,
Celery's queue depths, the last success of each periodic job, verification durations and failures by
check. Open to a bearer token (METRICS_TOKEN) or to addresses (METRICS_ALLOWED_ADDRESSES, the loopback
by default); anyone else gets 403."""

import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from access.models import AccessRequest
from access.tokens import bearer_from_header
from hub.errors import hf_error
from portal.tasks import RELEASED_STORAGE_PROBLEMS_KEY
from verification.models import CheckResult, FileCheck, VerificationRun
from workers.celery import JOB_SUCCESS_KEY, periodic_jobs, queue_depths

DURATION_BUCKETS = (1, 10, 60, 300, 1800, 3600, 3 * 3600, 12 * 3600)


def histogram(name: str, documentation: str, label: str, durations: dict[str, list[float]]):
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, seconds in durations.items():
        buckets = [(str(bound), sum(1 for s in seconds if s <= bound)) for bound in DURATION_BUCKETS]
        family.add_metric([value], [*buckets, ("+Inf", len(seconds))], sum(seconds))
    return family


def verification_durations() -> dict[str, list[float]]:
    """Seconds each finished stage took: each file's checks, and whole runs (publish, reverify)."""
    durations = {}
    files = FileCheck.objects.filter(finished_at__isnull=False).values_list("created_at", "finished_at")
    durations["file"] = [(finished - started).total_seconds() for started, finished in files]
    runs = VerificationRun.objects.filter(finished_at__isnull=False).values_list("kind", "started_at", "finished_at")
    for kind, started, finished in runs:
        durations.setdefault(kind, []).append((finished - started).total_seconds())
    return durations


class ReadAtScrape:
    """Metrics whose truth is in the database, the broker or the cache: read when Prometheus asks."""

    def collect(self):
        pending = AccessRequest.objects.filter(state=AccessRequest.State.PENDING)
        waiting = GaugeMetricFamily("weightgate_access_requests_pending", "Access requests awaiting a reviewer")
        waiting.add_metric([], pending.count())
        yield waiting
        oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
        age = GaugeMetricFamily(
            "weightgate_access_request_oldest_pending_seconds", "Age of the oldest pending access request (0: none)"
        )
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0)
        yield age
        depth = GaugeMetricFamily(
            "weightgate_celery_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
        )
        for queue, count in queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        succeeded = GaugeMetricFamily(
            "weightgate_periodic_job_last_success_timestamp_seconds",
            "When each periodic job last succeeded (0: not since the cache was emptied)",
            labels=["job"],
        )
        for job in periodic_jobs():
            succeeded.add_metric([job], cache.get(JOB_SUCCESS_KEY.format(job=job), 0))
        yield succeeded
        problems = cache.get(RELEASED_STORAGE_PROBLEMS_KEY)
        if problems is not None:  # until the first check, nothing is known
            storage = GaugeMetricFamily(
                "weightgate_released_storage_problems",
                "Problems the last daily check found with released files in storage (0: every file held as verified)",
            )
            storage.add_metric([], problems)
            yield storage
        yield histogram(
            "weightgate_verification_seconds", "Verification stages, finished", "stage", verification_durations()
        )
        failures = CounterMetricFamily(
            "weightgate_verification_failures", "Failed checks, by check code", labels=["check"]
        )
        failed = CheckResult.objects.filter(status=CheckResult.Status.FAIL).values("code").annotate(count=Count("id"))
        for row in failed:
            failures.add_metric([row["code"]], row["count"])
        yield failures


def allowed(request) -> bool:
    token = bearer_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    if settings.METRICS_TOKEN and token is not None:
        return hmac.compare_digest(token, settings.METRICS_TOKEN)
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_ADDRESSES)


@require_GET
def metrics(request):
    if not allowed(request):
        return hf_error(403, "metrics are for the monitoring system: send METRICS_TOKEN as a bearer token")
    started = time.perf_counter()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)  # every gunicorn worker's counts, added up
    else:
        counted = REGISTRY
    read = CollectorRegistry()
    read.register(ReadAtScrape())
    body = generate_latest(counted) + generate_latest(read)
    body += f"# scrape took {time.perf_counter() - started:.3f} s\n".encode()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
