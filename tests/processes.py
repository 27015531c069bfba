"""Keeps the suite's processes apart when pytest-xdist runs it in several (`make test` does).

Loaded with `-p tests.processes`, before Django reads its settings, so everything the settings derive
from these follows: each process gets its own files (database for SQLite, local storage, the file
broker and cache) under var/test-gwN, and its own Redis database for the broker, so no process's
worker takes another's tasks. pytest-django already gives each its own test database on PostgreSQL."""

import os
import urllib.parse
from pathlib import Path

REDIS_DATABASES = 16  # redis-server's default `databases`


def own_redis_database(url: str, index: int) -> str:
    """`url` moved `index` Redis databases on (wrapping at 16): process gwN's broker of the run's `url`."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.strip("/")
    if not path.isdigit():
        path = "0"
    return urllib.parse.urlunsplit(parts._replace(path=f"/{(int(path) + index) % REDIS_DATABASES}"))


def keep_apart(worker: str) -> None:
    index = int(worker.removeprefix("gw"))
    shared = os.environ.get("WEIGHTGATE_VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var" / "test")
    os.environ["WEIGHTGATE_VAR_DIR"] = f"{shared}-{worker}"
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("redis://", "rediss://")):
            os.environ[name] = own_redis_database(url, index)


# The worker id is in the environment before its pytest reads options or loads plugins.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    keep_apart(os.environ["PYTEST_XDIST_WORKER"])
