"""A request id for every request: taken from a proxy's `X-Request-ID` when it is a sane one, made here
otherwise, returned in the answer's `X-Request-ID`, written on every log line the request causes, and
carried in the headers of the tasks it sends, so a worker's lines name the request that queued them."""

import contextvars
import re
import uuid

from celery.signals import before_task_publish, task_prerun
from django.core.signals import request_finished

HEADER = "X-Request-ID"
# What a proxy's id may look like: anything else (too long, odd characters) is replaced, never logged.
ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{8,64}")

current = contextvars.ContextVar("request_id", default="")


def chosen(offered: str) -> str:
    return offered if ACCEPTED.fullmatch(offered) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Left set until the request finishes: Django logs a 4xx or 5xx after the middleware returns.
        request_id = chosen(request.META.get("HTTP_X_REQUEST_ID", ""))
        current.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


def forget(**kwargs) -> None:
    """request_finished: lines a web thread writes between requests name none."""
    current.set("")


def stamp_task(headers: dict | None = None, **kwargs) -> None:
    """Celery's before_task_publish: the task carries the id of the request (or task) that sends it."""
    if headers is not None and current.get():
        headers["request_id"] = current.get()


def adopt_task_id(task=None, **kwargs) -> None:
    """Celery's task_prerun: the task's log lines carry the id it was sent with (none: its own id)."""
    carried = getattr(task.request, "request_id", None) if task is not None else None
    current.set(carried or (task.request.id if task is not None else "") or "")


# Connected on import: by the middleware in web processes, by the Celery app in workers.
before_task_publish.connect(stamp_task, weak=False)
task_prerun.connect(adopt_task_id, weak=False)
request_finished.connect(forget, weak=False)
