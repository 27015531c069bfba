"""gunicorn for the portal's web tier: `gunicorn --config deploy/gunicorn.conf.py` (the app is named below).

Every value can be changed from the environment (the unit's EnvironmentFile), not by editing this file.
Of the project it reads only `machine` (plain Python, no Django), which every install of the portal holds.
"""

import os

from machine.cpus import usable_cpus


def _whole(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default)).strip()
    if not raw.isdigit():
        raise SystemExit(f"{name}={raw!r} is not a whole number")
    return int(raw)


wsgi_app = "portal.wsgi:application"
# Where nginx's upstream points (deploy/nginx/weightgate.conf): an address, or unix:/run/weightgate/web.sock.
bind = [address.strip() for address in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")]

# Threads: a request waiting on the database, S3 or the audit chain's head holds a thread, not a process.
# Each thread may keep a database connection (DATABASE_CONN_MAX_AGE): workers x threads per host.
worker_class = "gthread"
# One per CPU the unit or container may use (its quota), not per core of the host.
workers = _whole("GUNICORN_WORKERS", max(2, usable_cpus()))
threads = _whole("GUNICORN_THREADS", 8)

# With gthread the timeout is a heartbeat, not a limit on a request: the worker's main loop tells the
# arbiter it lives about once a second whatever its threads are doing, so a download streaming for
# hours in one thread is never cut. Only a process whose main loop is stuck this long is killed.
timeout = _whole("GUNICORN_TIMEOUT", 60)
# Graceful shutdown: on SIGTERM (systemctl stop or restart) a worker stops accepting and lets requests
# in flight finish for this long; SIGHUP (systemctl reload) starts workers with the new code first and
# retires the old ones the same way. Behind the shipped nginx nothing long runs here (local files go
# out through X-Accel-Redirect, S3 objects by redirect); without it, a download still running at a
# restart is cut after this long and the client resumes it with a range.
graceful_timeout = _whole("GUNICORN_GRACEFUL_TIMEOUT", 60)
# Longer than nginx keeps an idle upstream connection (keepalive_timeout 60s in the shipped site), so
# gunicorn never closes one that nginx is about to send a request on.
keepalive = _whole("GUNICORN_KEEPALIVE", 75)

# The heartbeat is a file touched once a second: on tmpfs, a slow disk never makes a worker look dead.
# (gunicorn makes its own file there with mkstemp, so a shared directory is safe.)
SHARED_MEMORY = "/dev/shm"  # noqa: S108
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or (SHARED_MEMORY if os.path.isdir(SHARED_MEMORY) else None)
# systemd (or whatever runs this) starts, stops and reloads gunicorn: no control socket in a home directory.
control_socket_disable = True
errorlog = "-"  # stderr: the journal under systemd


# /metrics adds up every worker process's counts, kept as files in PROMETHEUS_MULTIPROC_DIR (set in the
# environment file): emptied when gunicorn starts, and a finished worker's live gauges let go of.
def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
