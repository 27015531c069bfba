"""Every answer carries an X-Request-ID, every log line the request causes names it (in JSON lines with
LOG_FORMAT=json), the tasks it sends carry it to the worker's lines, and no token, password, ticket or
signed link ever reaches a log."""

import json
import logging

import pytest

from hub.log_lines import JsonFormatter, PlainFormatter, RequestIdFilter
from hub.request_ids import current
from tests.support import servers
from tests.support.personas import person, token_for

TICKET = "tkt" + "Z" * 40
TOKEN = "wg_" + "s" * 43


def test_every_answer_carries_a_request_id_and_a_proxys_sane_one_is_kept(client, db):
    made = client.get("/")["X-Request-ID"]
    assert len(made) == 32 and made != client.get("/")["X-Request-ID"]
    assert client.get("/", HTTP_X_REQUEST_ID="edge-1234abcd")["X-Request-ID"] == "edge-1234abcd"
    for odd in ("short", "x" * 65, "has spaces in it", "inject\nline-feed"):
        assert client.get("/", HTTP_X_REQUEST_ID=odd)["X-Request-ID"] not in (odd, "")


def line(formatter: logging.Formatter, message: str, *args) -> str:
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, message, args, None)
    RequestIdFilter().filter(record)
    return formatter.format(record)


@pytest.mark.parametrize("formatter", [JsonFormatter(), PlainFormatter("%(request_id)s %(message)s")])
def test_secrets_never_reach_a_line_whatever_the_format(formatter):
    token = current.set("req-12345678")
    try:
        written = "\n".join(
            [
                line(formatter, "Forbidden: /files/%s/model.safetensors", TICKET),
                line(formatter, "Not Found: /dl/%s/config.json", "eyJsaWduZWQ.abc:def"),
                line(formatter, "header Authorization: Bearer %s", TOKEN),
                line(formatter, "token %s leaked in a message", TOKEN),
                line(formatter, "login with %s", {"username": "alice", "password": "hunter2hunter2"}),
                line(formatter, "GET /x?password=hunter2hunter2&next=/"),
                line(formatter, "redirect to https://s3/b/k?X-Amz-Signature=%s&X-Amz-Expires=10", "ab" * 32),
            ]
        )
    finally:
        current.reset(token)
    for secret in (TICKET, TOKEN, "eyJsaWduZWQ", "hunter2hunter2", "ab" * 32):
        assert secret not in written
    assert written.count("req-12345678") == 7 and "[redacted]" in written


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_json_lines_from_gunicorn_and_the_worker_carry_the_requests_id(worker_env, tmp_path):
    """A request through gunicorn (LOG_FORMAT=json) whose access request mails a reviewer; the worker, whose
    SMTP server is down, logs its retry under the id the answer gave."""
    from access.models import GatingPolicy
    from distribution.models import Repo

    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo)
    person("bob", reviews=[repo])
    alice = token_for(person("alice"))
    env = {**worker_env, "LOG_FORMAT": "json", "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(servers.free_port())}
    env["EMAIL_USE_TLS"] = "0"
    worker = servers.start_worker(env, tmp_path / "worker.log", queues="mail", name="logs")
    server, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log")
    try:
        import requests

        asked = requests.post(
            f"{base}/api/v1/access-requests/",
            headers={"Authorization": f"Bearer {alice}"},
            json={"repo": "acme/tiny", "fields": {}, "accept_license": True},
            timeout=30,
        )
        refused = requests.get(f"{base}/files/{TICKET}/model.safetensors", timeout=30)
        request_id = asked.headers["X-Request-ID"]
        servers.wait_until(
            lambda: request_id in (tmp_path / "worker.log").read_text(), timeout=60, what="the worker's retry line"
        )
    finally:
        servers.stop_process(server)
        servers.stop_process(worker)
    assert asked.status_code in (200, 201), asked.text
    assert refused.status_code in (403, 404)
    web_lines = json_lines(tmp_path / "gunicorn.log")
    refusal = [entry for entry in web_lines if entry["request_id"] == refused.headers["X-Request-ID"]]
    assert refusal and all(TICKET not in json.dumps(entry) for entry in web_lines)
    worker_lines = json_lines(tmp_path / "worker.log")
    retry = [entry for entry in worker_lines if entry["request_id"] == request_id and entry["logger"] == "mail.tasks"]
    assert retry and "not sent" in retry[0]["message"]
    assert all(alice not in json.dumps(entry) for entry in web_lines + worker_lines)
    # A worker of the mail queue alone builds no models: it does not load their code as it starts.
    assert not [entry for entry in worker_lines if "model code loaded" in entry["message"]]


def json_lines(log) -> list[dict]:
    """The log's JSON lines (gunicorn's and Celery's own start-up banners are plain text)."""
    return [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]
