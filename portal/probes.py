"""Liveness and readiness: `/livez`, `/readyz` (and `/health`, its older name), answered first.

`/livez` says the process answers and touches nothing else, so a restart is never decided by a
database outage. `/readyz` says whether this process can do its work now: the database, the cache,
the broker, each storage, the signing key where one is configured, the download spool, and at least
one worker on each queue in READY_QUEUES. It answers JSON naming every check, 503 when one fails.

Probes come from load balancers and orchestrators that use addresses, not the site's name, and plain
HTTP: ProbeMiddleware sits first in MIDDLEWARE, so these three paths are answered before the host is
validated (ALLOWED_HOSTS) and before the HTTPS redirect. Nothing in the answer comes from the Host
header or any other part of the request, so answering any Host poisons no cache and no link; every
other path still validates its host. The messages name what failed and how (an exception's class),
never an address or a key: the details go to the log.

The checks are django-health-check's (`HealthCheck`: a `run` that raises `ServiceUnavailable`, run
with a time budget): its Database and Cache checks as they are, and ours for the rest. Its view is
not used: it answers 500 rather than 503, HTML unless asked for JSON, and only once the URL resolver,
the host validation and the HTTPS redirect have had the request.
"""

import asyncio
import dataclasses
import datetime
import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.http import HttpResponseNotAllowed, JsonResponse
from django.utils.cache import add_never_cache_headers
from health_check.base import HealthCheck, HealthCheckResult
from health_check.checks import Cache, Database
from health_check.exceptions import ServiceUnavailable

from distribution.storage import get_storage, s3_configured
from verification.signing import SigningUnavailable, load_private_key
from workers.celery import app as celery_app

log = logging.getLogger(__name__)
BUDGET = datetime.timedelta(seconds=5)  # each check's; they run at once, so /readyz answers within about 6 s
WORKER_REPLY_SECONDS = 1.0  # how long the workers' answers to one broadcast are collected


def unavailable(what: str, error: BaseException) -> ServiceUnavailable:
    """The message the probe shows (the class of the failure, no address); the log keeps the details."""
    return ServiceUnavailable(f"{what} ({type(error).__name__})")


@dataclasses.dataclass
class Broker(HealthCheck):
    """A connection to the Celery broker opens now (one try; the retries are the tasks' business)."""

    timeout = BUDGET

    def run(self):
        try:
            with celery_app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=0)
        except Exception as error:  # kombu raises the transport's own errors, of no common class
            raise unavailable("the broker cannot be reached", error) from error


@dataclasses.dataclass
class Storage(HealthCheck):
    """Files of this backend can be reached now (distribution.storage's `probe`)."""

    backend: str
    timeout = BUDGET

    def run(self):
        try:
            get_storage(self.backend).probe()
        except Exception as error:  # StorageError, and whatever building a client for it raised
            raise unavailable(f"{self.backend} storage cannot be reached", error) from error


@dataclasses.dataclass
class SigningKey(HealthCheck):
    """Where SIGNING_KEY is configured (GPU workers; web hosts hold none), it loads as a P-256 key."""

    timeout = BUDGET

    def run(self):
        if not settings.SIGNING_KEY:
            return  # web hosts serve the public keys the workers registered; they make and hold no key
        try:
            load_private_key()
        except SigningUnavailable as error:
            raise ServiceUnavailable(str(error)) from error


@dataclasses.dataclass
class Spool(HealthCheck):
    """A file can be written in DOWNLOAD_SPOOL_DIR, where download events wait to be stored."""

    timeout = BUDGET

    def run(self):
        directory = Path(settings.DOWNLOAD_SPOOL_DIR)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory, prefix=".readyz-"):
                pass
        except OSError as error:
            raise unavailable("DOWNLOAD_SPOOL_DIR is not writable", error) from error


class WorkerQueues:
    """The queues the workers that answer one broadcast consume: asked once for all the queue checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answer: dict[str, list[dict]] | Exception | None = None

    def consumed(self) -> set[str]:
        with self.lock:
            if self.answer is None:
                try:
                    inspect = celery_app.control.inspect(timeout=WORKER_REPLY_SECONDS)
                    self.answer = inspect.active_queues() or {}
                except Exception as error:  # the broker's own errors
                    self.answer = error
        if isinstance(self.answer, Exception):
            raise unavailable("the workers cannot be asked", self.answer)
        return {queue["name"] for queues in self.answer.values() for queue in queues}


@dataclasses.dataclass
class QueueWorker(HealthCheck):
    """At least one worker consuming `queue` answered within WORKER_REPLY_SECONDS."""

    queue: str
    workers: WorkerQueues = dataclasses.field(repr=False)
    timeout = BUDGET

    def run(self):
        if self.queue not in self.workers.consumed():
            raise ServiceUnavailable(
                f"no worker consuming queue {self.queue} answered within {WORKER_REPLY_SECONDS:g} s"
            )


def readiness_checks() -> dict[str, HealthCheck]:
    database, cache = Database(), Cache(timeout=BUDGET)
    database.timeout = BUDGET
    checks = {"database": database, "cache": cache, "broker": Broker(), "storage:local": Storage("local")}
    if s3_configured():
        checks["storage:s3"] = Storage("s3")
    checks |= {"signing_key": SigningKey(), "spool": Spool()}
    workers = WorkerQueues()
    checks |= {f"queue:{queue}": QueueWorker(queue, workers) for queue in settings.READY_QUEUES}
    return checks


def run_all(checks: dict[str, HealthCheck]) -> dict[str, HealthCheckResult]:
    """Every check at once, each within its budget. A check past it is reported and left behind: the
    answer never waits for it (a thread pool of our own, not asyncio's default, which would be awaited)."""
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")

    async def gathered():
        return await asyncio.gather(*(check.get_result(pool) for check in checks.values()))

    try:
        return dict(zip(checks, asyncio.run(gathered()), strict=True))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def readiness() -> JsonResponse:
    results = run_all(readiness_checks())
    report = {
        name: {"ok": True, "seconds": round(result.time_taken, 3)}
        if result.error is None
        else {"ok": False, "error": str(result.error), "seconds": round(result.time_taken, 3)}
        for name, result in results.items()
    }
    failed = [name for name, entry in report.items() if not entry["ok"]]
    response = JsonResponse({"ok": not failed, "failed": failed, "checks": report}, status=503 if failed else 200)
    response._has_been_logged = True  # each failed check was logged, with its cause; not the 503 again
    return response


def liveness() -> JsonResponse:
    return JsonResponse({"ok": True})


PROBES = {"/livez": liveness, "/readyz": readiness, "/health": readiness}


class ProbeMiddleware:
    """Answers the probes' paths before any other middleware (host validation and HTTPS redirect
    included) sees the request; every other request goes on unchanged."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        response = probe()
        add_never_cache_headers(response)
        return response
