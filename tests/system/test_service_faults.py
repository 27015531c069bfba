"""Downloads through faults of the services underneath: PostgreSQL connections terminated under a
running server, and Redis (the shared rate-limit counts) silent for 4 seconds. No answer may be a
500, and every file served is recorded.

Real gunicorn with connections kept between requests (DATABASE_CONN_MAX_AGE), real PostgreSQL
(pg_terminate_backend), and a Redis server the test starts, frozen with DEBUG SLEEP."""

import socket
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.db import connection

from distribution.models import DownloadEvent
from tests.support import servers

pytestmark = pytest.mark.django_db(transaction=True)
DOWNLOADS = 300
FILE = "config.json"


def gunicorn(env: dict[str, str], log: Path):
    # Connections kept between requests: the case a terminated backend breaks.
    return servers.start_gunicorn({**env, "DATABASE_CONN_MAX_AGE": "600"}, log, workers=2)


def download_many(base: str, token: str, during) -> Counter:
    """DOWNLOADS downloads by one grantee, from two threads, while `during(progress)` does its harm."""
    statuses, done = Counter(), []
    lock = threading.Lock()

    def client(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                answer = session.get(
                    f"{base}/acme/tiny/resolve/main/{FILE}", headers={"Authorization": f"Bearer {token}"}, timeout=60
                )
                with lock:
                    statuses[answer.status_code] += 1
                    done.append(1)

    threads = [threading.Thread(target=client, args=(DOWNLOADS // 2,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    during(lambda: len(done))
    for thread in threads:
        thread.join(timeout=300)
    return statuses


def test_terminated_database_connections_cost_no_download(release, worker_env, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("terminating server connections is PostgreSQL's pg_terminate_backend")
    _, token = release
    server, base = gunicorn(worker_env, tmp_path / "gunicorn.log")

    def terminate_five_times(progress) -> None:
        for round_ in range(1, 6):
            servers.wait_until(lambda r=round_: progress() >= r * DOWNLOADS // 6, timeout=120, what="downloads")
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert cursor.fetchone()[0] > 0  # the server's kept connections were there to end

    try:
        statuses = download_many(base, token, terminate_five_times)
    finally:
        servers.stop_process(server)
    assert statuses == {200: DOWNLOADS}, (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert DownloadEvent.objects.filter(status=200, path=FILE).count() == DOWNLOADS


def test_redis_silent_for_four_seconds_costs_no_download(release, worker_env, private_redis, tmp_path):
    _, token = release
    server, base = gunicorn({**worker_env, "CACHE_URL": private_redis}, tmp_path / "gunicorn.log")
    port = urllib.parse.urlsplit(private_redis).port

    def freeze_redis(progress) -> None:
        servers.wait_until(lambda: progress() >= DOWNLOADS // 3, timeout=120, what="downloads")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            silent.sendall(b"DEBUG SLEEP 4\r\n")
            started = time.monotonic()
            assert silent.recv(16).startswith(b"+OK") and time.monotonic() - started >= 3.5

    try:
        statuses = download_many(base, token, freeze_redis)
    finally:
        servers.stop_process(server)
    assert statuses == {200: DOWNLOADS}
    assert DownloadEvent.objects.filter(status=200, path=FILE).count() == DOWNLOADS
