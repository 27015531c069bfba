"""What the web processes count, for Prometheus: requests, downloads and their bytes, refusals for rate
(the wait for the audit chain's head is audit.chain's own). Under gunicorn every worker process writes its counts to
PROMETHEUS_MULTIPROC_DIR (set before this module is imported: the shipped gunicorn.conf.py does),
and /metrics adds them up; without it (`make run`), the one process keeps its own.

What is read from the database, the broker or the cache when Prometheus asks (pending requests,
queue depths, the spool, the periodic jobs) is collected by portal.metrics at scrape time instead."""

from prometheus_client import Counter, Gauge

REQUESTS = Counter("weightgate_http_requests", "Answers, by view and status", ["view", "method", "status"])
DOWNLOADS = Counter(
    "weightgate_downloads", "Downloads, by repo, channel and outcome (served, capped)", ["repo", "channel", "outcome"]
)
DOWNLOAD_BYTES = Counter(
    "weightgate_download_bytes", "Bytes of the windows served, by repo and channel", ["repo", "channel"]
)
# Per web process, summed (backlog) or the worst (age) over the live ones.
SPOOL_BACKLOG = Gauge(
    "weightgate_spool_backlog_lines", "Download events spooled and not yet stored", multiprocess_mode="livesum"
)
SPOOL_OLDEST_AGE = Gauge(
    "weightgate_spool_oldest_line_age_seconds",
    "Age of the oldest download event not yet stored, at the last try",
    multiprocess_mode="livemax",
)
RATE_LIMITED = Counter("weightgate_rate_limited", "Answers refused with 429, by what was limited", ["limit"])
# Anything but zero means someone wrote to or deleted from the bucket behind the portal's back.
STORED_FILE_MISMATCHES = Counter(
    "weightgate_stored_file_mismatches",
    "Links asked for released files whose key no longer holds them as verified, by repo and outcome "
    "(verified_version: the bucket keeps the verified version and the link names it; refused: 503)",
    ["repo", "outcome"],
)


class RequestMetricsMiddleware:
    """Counts every answer by the view that gave it (its URL name; `unmatched` for none)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match._func_path) if match is not None else "unmatched"
        REQUESTS.labels(view=view, method=request.method, status=str(response.status_code)).inc()
        if response.status_code == 429:
            RATE_LIMITED.labels(limit=view).inc()
        return response
