"""/livez and /readyz: what each says, to whom, and what each failure looks like.

The failures are real: a SeaweedFS this test starts and stops, a database address nothing listens on
(in gunicorn with the shipped config, HTTPS=1 and a strict ALLOWED_HOSTS), and Celery workers started
from the shipped systemd units' command lines, on a Redis this test starts, one of them then stopped."""

import json
import os

import pytest
from django.conf import settings
from django.test import override_settings

from tests.support import servers
from tests.support.deployment import exec_start
from tests.support.flows import http

CHECKS = {"database", "cache", "broker", "storage:local", "signing_key", "spool"}


def readiness(client, **headers):
    response = client.get("/readyz", **headers)
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_livez_answers_without_touching_the_database(client):
    # No django_db mark: a query here would fail the test.
    response = client.get("/livez")
    assert (response.status_code, response.json()) == (200, {"ok": True})


@pytest.mark.django_db
def test_readyz_names_every_check_and_answers_200_when_all_pass(client):
    status, body = readiness(client)
    assert status == 200 and body["ok"] is True and body["failed"] == []
    # No queue declared; S3 is checked once it is configured (the suite's SeaweedFS, when a test started it).
    assert set(body["checks"]) == CHECKS | ({"storage:s3"} if settings.S3_BUCKET else set())
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["weights.example.org"], SECURE_SSL_REDIRECT=True)
def test_probes_answer_any_host_over_plain_http_while_every_other_path_still_checks_both(client):
    for path in ("/livez", "/readyz", "/health"):
        assert client.get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # DisallowedHost, as before
    redirected = client.get("/", HTTP_HOST="weights.example.org")
    assert (redirected.status_code, redirected["Location"]) == (301, "https://weights.example.org/")


def test_probes_take_only_get_and_head(client):
    assert client.post("/readyz").status_code == 405
    assert client.head("/livez").status_code == 200


@pytest.mark.django_db
def test_an_unwritable_spool_and_an_unusable_signing_key_are_named(client, tmp_path):
    (tmp_path / "spool").write_text("a file where the folder should be")
    with override_settings(DOWNLOAD_SPOOL_DIR=tmp_path / "spool", SIGNING_KEY="not a key"):
        status, body = readiness(client)
    assert status == 503 and body["ok"] is False
    assert body["failed"] == ["signing_key", "spool"]
    assert "not an unencrypted PEM private key" in body["checks"]["signing_key"]["error"]
    assert "DOWNLOAD_SPOOL_DIR is not writable" in body["checks"]["spool"]["error"]


@pytest.mark.django_db
def test_stopped_object_storage_makes_readyz_503_naming_it(client, tmp_path):
    process, endpoint = servers.start_seaweedfs(tmp_path)
    try:
        try:
            servers.wait_for_bucket(process, endpoint, tmp_path)
        except (RuntimeError, TimeoutError) as error:
            servers.unavailable("s3", str(error))
        with override_settings(**endpoint.env()):
            status, body = readiness(client)
            assert (status, body["failed"]) == (200, [])
            assert body["checks"]["storage:s3"]["ok"] is True
            servers.stop_process(process)
            status, body = readiness(client)
    finally:
        servers.stop_process(process)
    assert status == 503 and body["failed"] == ["storage:s3"]
    assert body["checks"]["storage:s3"]["error"] == "Unavailable: s3 storage cannot be reached (StorageError)"
    assert endpoint.url.split("//")[1] not in json.dumps(body)  # no address is shown to whoever asks


def bare_environment(tmp_path, **settings) -> dict[str, str]:
    """The suite's environment without its services: a data folder of its own, and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "DATABASE_", "CELERY_", "CACHE_"))}
    return {**env, "WEIGHTGATE_VAR_DIR": str(tmp_path / "var"), "PYTHONPATH": str(servers.REPO_ROOT), **settings}


def test_an_unreachable_database_gives_json_503_to_a_probe_of_any_host_behind_https(tmp_path):
    closed = servers.free_port()
    env = bare_environment(
        tmp_path,
        DATABASE_URL=f"postgres://weightgate@127.0.0.1:{closed}/weightgate",
        HTTPS="1",
        ALLOWED_HOSTS="weights.example.org",
    )
    server, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log")
    try:
        answers = {path: http("GET", f"{base}{path}", headers={"Host": "10.0.0.7"}) for path in ("/readyz", "/health")}
        alive = http("GET", f"{base}/livez", headers={"Host": "10.0.0.7"})
        page = http("GET", f"{base}/", headers={"Host": "weights.example.org"})
    finally:
        servers.stop_process(server)
    for status, headers, body in answers.values():
        assert (status, headers["Content-Type"]) == (503, "application/json")
        report = json.loads(body)
        assert report["failed"] == ["database"]
        assert report["checks"]["database"]["error"].startswith("Unavailable: connection failed")
    assert alive[0] == 200  # a database outage is no reason to restart the web process
    assert (page[0], page[1]["Location"]) == (301, "https://weights.example.org/")  # everything else: HTTPS


@pytest.mark.django_db(transaction=True)
def test_readyz_wants_a_worker_on_each_declared_queue_and_names_the_one_without(worker_env, private_redis, tmp_path):
    env = {
        **worker_env,
        "CELERY_BROKER_URL": private_redis,
        "READY_QUEUES": "verify,gpu,default",
        "PYTHONPATH": str(servers.REPO_ROOT),
    }
    server, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log")
    workers = []
    try:
        status, _, body = http("GET", f"{base}/readyz")
        assert status == 503 and json.loads(body)["failed"] == ["queue:verify", "queue:gpu", "queue:default"]
        units = ("weightgate-worker.service", "weightgate-gpu-worker.service")
        workers += servers.start_celery_workers([(exec_start(unit), tmp_path / f"{unit}.log") for unit in units], env)
        status, _, body = http("GET", f"{base}/readyz")
        assert status == 200, body
        assert {name for name in json.loads(body)["checks"] if name.startswith("queue:")} == {
            "queue:verify",
            "queue:gpu",
            "queue:default",
        }
        servers.stop_process(workers[1])  # the only GPU worker
        status, _, body = http("GET", f"{base}/readyz")
    finally:
        for process in (*workers, server):
            servers.stop_process(process)
        servers.close_other_sessions()
    report = json.loads(body)
    assert status == 503 and report["failed"] == ["queue:gpu"]
    assert report["checks"]["queue:gpu"]["error"] == "Unavailable: no worker consuming queue gpu answered within 1 s"
