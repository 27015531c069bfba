"""`make run`'s children (the migrate, gunicorn, the worker) as forked copies of the process that has loaded the portal.

None of them imports Django, the views and the middleware again: on a new machine's first start those imports
were most of the wait for the first page, paid by the web server's two workers and the worker on the same cores.
"""

import multiprocessing
import signal
import subprocess

from django.db import connections
from django.urls import get_resolver
from gunicorn.app.base import BaseApplication


class LoadedPortal(BaseApplication):
    """gunicorn serving a WSGI application already in memory, with settings given by name."""

    def __init__(self, application, settings: dict):
        self.application = application
        self.settings = settings
        super().__init__()

    def load_config(self):
        for name, value in self.settings.items():
            self.cfg.set(name, value)

    def load(self):
        return self.application


class ForkedProcess:
    """A function run in a forked child, answering the calls `subprocess.Popen` answers that run_demo makes."""

    def __init__(self, name: str, target):
        self.name = name
        connections.close_all()  # a database connection is never shared across a fork
        # This process's SIGTERM handler stops its children: held back across the fork, so a SIGTERM
        # arriving meanwhile reaches the child as it would a new process, never running that handler there.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            self.process = multiprocessing.get_context("fork").Process(
                target=as_new_process, args=(target, mask), name=name
            )
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.name, timeout)
        return self.process.exitcode


def as_new_process(target, mask) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    target()


def load_portal():
    """The WSGI application with its middleware (whitenoise reads the collected static files) and every view."""
    from portal.wsgi import application

    get_resolver().url_patterns  # noqa: B018  (imports every view now, not in each worker's first request)
    return application


def start_web_server(application, bind: str, port: int, **settings) -> ForkedProcess:
    """gunicorn serving `application` on bind:port, from a fork of this process."""
    server = LoadedPortal(application, {"bind": [f"{bind}:{port}"], "worker_class": "gthread", **settings})
    return ForkedProcess("gunicorn", server.run)
