import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

# The Hugging Face client reads these when imported: no telemetry, no update check, no user cache.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")

import pytest
from django.conf import settings
from django.test.utils import override_settings

from tests.support import servers

CHROMIUM = "/usr/bin/chromium"


def pytest_configure(config):
    """A run stopped with SIGTERM (`timeout`, CI) unwinds like Ctrl-C, so the fixtures stop the servers and
    workers they started in sessions of their own; otherwise they outlive it and a stale worker takes the
    next run's tasks from the same broker."""

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupted)


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (mostly idle, waiting on a rate-limited reader) go first: in a run of several
    processes they then overlap the rest of the suite instead of finishing alone at its end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_report_header(config):
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    required = ", ".join(sorted(servers.required_services())) or "none (missing services skip their tests)"
    return [f"weightgate: database={engine} broker={broker} storage=local+s3(SeaweedFS) required={required}"]


@pytest.fixture(scope="session", autouse=True)
def fast_passwords():
    """Every person the tests make has a password; the production hasher's million rounds cost about a
    second each on this machine. Servers the tests start in other processes keep the real hashers."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Throttles and lock-outs count in the cache; each test starts with none spent."""
    from django.core.cache import cache

    from hub.rate_limits import reservations

    cache.clear()
    reservations.clear()  # the request numbers this process took from the counts just cleared


@pytest.fixture(autouse=True)
def mail_delivered_in_process(request, monkeypatch):
    """Mail goes to Django's test outbox at once, in this process, even from a test's transaction that
    never commits: most tests read it there. Tests marked `real_mail` (tests/mail/) send it the real way,
    through a worker to an SMTP server."""
    if request.node.get_closest_marker("real_mail"):
        return
    from mail import messages
    from mail.tasks import deliver

    class AtOnce:
        @staticmethod
        def delay_on_commit(*args):
            deliver.apply(args=args).get()

    monkeypatch.setattr(messages, "deliver", AtOnce)


@pytest.fixture(scope="session", autouse=True)
def required_database():
    """CI runs on PostgreSQL; a suite that fell back to SQLite there would prove nothing about it."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgres" in servers.required_services() and "postgresql" not in engine:
        pytest.fail(f"PostgreSQL is required but the suite is configured with {engine}: set DATABASE_URL")


@pytest.fixture(scope="session", autouse=True)
def flush_deletes_rows_despite_deadlocks():
    """How PostgreSQL is emptied after each transactional test (223 of them; SQLite's flush deletes already).

    Django's TRUNCATE of every table costs 0.3 s of the server's CPU, and as long in the test, each time, as
    every table gets new files; deleting the rows leaves it as empty at a fraction of that. The tables are
    locked against writes first, as TRUNCATE would, so a worker still finishing a test's task cannot add a
    row that refers to one deleted (the foreign keys are checked at the commit). That worker may hold one
    table and want another: PostgreSQL then aborts the emptying as a deadlock, and it is tried again once
    the worker's transaction is over, as an operator would."""
    from django.db import OperationalError, connection

    if connection.vendor != "postgresql":
        yield
        return
    operations = type(connection.ops)
    truncated, emptied = operations.sql_flush, operations.execute_sql_flush

    def deleted(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or not tables:
            return truncated(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        names = [self.quote_name(table) for table in tables]  # Django's own table names, quoted
        deletes = [f"DELETE FROM {name};" for name in names]  # noqa: S608
        return [f"LOCK TABLE {', '.join(names)} IN EXCLUSIVE MODE;", *deletes]

    def emptied_despite_deadlocks(self, sql_list):
        for attempt in range(5):
            try:
                return emptied(self, sql_list)
            except OperationalError as error:
                if "deadlock detected" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.5)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "sql_flush", deleted)
        patch.setattr(operations, "execute_sql_flush", emptied_despite_deadlocks)
        yield


@contextlib.contextmanager
def session_settings(**values):
    """`values` set in Django's settings beneath every override in force, until the block ends.

    An override_settings enabled for the session inside a test (a fixture first asked for there) would sit
    above that test's own overrides, and pytest-django's live server undoes its override by restoring what
    it found, which drops every override made after it: the rest of the run would lose these values."""
    from django.conf import settings
    from django.test.signals import setting_changed
    from django.test.utils import UserSettingsHolder

    base = settings._wrapped
    while isinstance(base, UserSettingsHolder):
        base = base.default_settings
    saved = {name: getattr(base, name) for name in values}

    def put(changes: dict, enter: bool) -> None:
        for name, value in changes.items():
            setattr(base, name, value)
            setting_changed.send(sender=type(base), setting=name, value=value, enter=enter)

    put(values, True)
    try:
        yield
    finally:
        put(saved, False)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A SeaweedFS server for the whole run, with the portal's S3 settings pointing at it."""
    workdir = tmp_path_factory.mktemp("seaweedfs")
    process, endpoint = servers.start_seaweedfs(workdir)
    try:
        servers.wait_for_bucket(process, endpoint, workdir)
    except (RuntimeError, TimeoutError) as error:
        servers.stop_process(process)
        servers.unavailable("s3", str(error))
    with session_settings(
        S3_ENDPOINT_URL=endpoint.url,
        S3_BUCKET=endpoint.bucket,
        S3_ACCESS_KEY_ID=endpoint.access_key,
        S3_SECRET_ACCESS_KEY=endpoint.secret_key,
        S3_REGION=endpoint.region,
    ):
        yield endpoint
    servers.stop_process(process)


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, s3_endpoint) -> dict[str, str]:
    """The environment a worker process needs to share this run's database, broker and storage."""
    from django.db import connection

    with django_db_blocker.unblock():
        url = servers.database_url(connection.settings_dict)
    return {
        **os.environ,
        **s3_endpoint.env(),
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "WEIGHTGATE_VAR_DIR": str(settings.VAR_DIR),
        "LOCAL_STORAGE_ROOT": str(settings.LOCAL_STORAGE_ROOT),
        "SECRET_KEY": settings.SECRET_KEY,
        "AUDIT_CHAIN_KEY": settings.AUDIT_CHAIN_KEY,
    }


@pytest.fixture(scope="session")
def worker(worker_env, django_db_blocker, tmp_path_factory):
    """A real Celery worker process on the configured broker, sharing the test database and storage."""
    from workers.celery import app

    try:
        app.control.purge()  # messages left by an earlier, interrupted run
    except Exception as error:  # any broker failure means the broker is unusable
        servers.unavailable("redis" if settings.CELERY_BROKER_URL.startswith("redis") else "broker", str(error))
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    try:
        process = servers.start_worker(worker_env, log)
    except (RuntimeError, TimeoutError) as error:
        servers.unavailable("worker", str(error))
    process.log_path = log  # what it said as it started
    yield process
    servers.stop_process(process)
    with django_db_blocker.unblock():
        servers.close_other_sessions()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own (its URL, database 0): no other worker on this machine answers its
    broadcasts, a test may freeze it (DEBUG SLEEP) or empty it without touching the run's broker."""
    binary = shutil.which("redis-server")
    if binary is None:
        servers.unavailable("redis", "redis-server is not installed (apt-get install redis-server)")
    port = servers.free_port()
    options = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "yes")
    process = subprocess.Popen(
        [binary, "--port", str(port), *options, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        servers.wait_until(lambda: servers.answers_ping(url), timeout=30, what="redis-server")
        yield url
    finally:
        servers.stop_process(process)


@pytest.fixture
def s3_release(s3_endpoint, tmp_path):
    """acme/tiny released on S3, with alice granted access: (revision, checkpoint directory, her token)."""
    return released_to_alice(tmp_path)


@pytest.fixture
def versioned_s3_release(s3_endpoint, settings, tmp_path):
    """As s3_release, in a bucket of its own that keeps every version of an object (S3 versioning on)."""
    settings.S3_BUCKET = servers.versioned_bucket(s3_endpoint)
    return released_to_alice(tmp_path)


def released_to_alice(tmp_path):
    from access.services import grant_access
    from tests.support.flows import published_tiny_llama
    from tests.support.personas import person, token_for

    revision, checkpoint = published_tiny_llama(tmp_path, "acme/tiny", "s3", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, checkpoint, token_for(alice)


@pytest.fixture
def browser(monkeypatch):
    """Debian's Chromium driven by Playwright, headless; CI installs it, a machine without it skips."""
    # Playwright's sync API keeps an event loop in this thread; the test's own database reads are
    # still synchronous, which Django would otherwise refuse there.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        servers.unavailable("chromium", "Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()
        # While Playwright's loop runs in this thread, Django's connections are another set (context-local);
        # one left open would be the next browser test's, dead if a test between ended every other session
        # (tests/system/test_service_faults.py does).
        from django.db import connections

        connections.close_all()


@pytest.fixture
def release(tmp_path):
    """acme/tiny released on local storage, alice granted access: (revision, her token)."""
    from access.services import grant_access
    from tests.support.flows import published_tiny_llama
    from tests.support.personas import person, token_for

    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, token_for(alice)
