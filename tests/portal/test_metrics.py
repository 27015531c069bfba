"""/metrics in Prometheus's format: who may read it, what it counts, and Debian's Prometheus scraping
two gunicorn workers whose counts add up to the exact number of downloads."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from access.models import AccessRequest, GatingPolicy
from access.services import grant_access
from distribution.models import Repo
from tests.support import servers
from tests.support.flows import published_tiny_llama
from tests.support.metrics import samples
from tests.support.personas import person, token_for

RESOLVE = "/acme/tiny/resolve/main/config.json"


def served(text: str, repo: str = "acme/tiny") -> float:
    return sum(
        value
        for (name, labels), value in samples(text).items()
        if name == "weightgate_downloads_total" and ("outcome", "served") in labels and ("repo", repo) in labels
    )


@pytest.mark.django_db
def test_metrics_answer_the_loopback_a_token_and_nobody_else(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7").status_code == 403
    settings.METRICS_TOKEN = "scrape-" + "k" * 30
    bearer = f"Bearer {settings.METRICS_TOKEN}"
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION=bearer).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    settings.METRICS_ALLOWED_ADDRESSES = ()
    assert client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_downloads_requests_and_pending_requests_are_counted(client, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    before = served(client.get("/metrics").content.decode())
    for _ in range(3):
        assert client.get(RESOLVE, HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}", follow=True).status_code == 200
    other = Repo.objects.create(org="acme", name="other")
    GatingPolicy.objects.create(repo=other)
    AccessRequest.objects.create(user=person("bob"), repo=other, license_version="1")
    text = client.get("/metrics").content.decode()
    assert served(text) == before + 3
    found = samples(text)
    assert found[("weightgate_access_requests_pending", ())] == 1
    assert found[("weightgate_access_request_oldest_pending_seconds", ())] >= 0
    assert any(name == "weightgate_http_requests_total" and ("view", "hf-resolve") in labels for name, labels in found)
    assert {dict(labels)["queue"] for name, labels in found if name == "weightgate_celery_queue_depth"} == {
        "default",
        "gpu",
        "mail",
        "verify",
    }
    assert ("weightgate_verification_seconds_count", (("stage", "file"),)) in found


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_periodic_jobs_success_in_a_worker_shows_in_the_metrics(worker, client):
    from audit.tasks import erase_old_origins

    job = ("weightgate_periodic_job_last_success_timestamp_seconds", (("job", erase_old_origins.name),))
    sent = time.time()
    erase_old_origins.delay()
    servers.wait_until(
        lambda: samples(client.get("/metrics").content.decode())[job] >= sent, timeout=60, what="the job's success"
    )


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: weightgate
    metrics_path: /metrics
    authorization:
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def start_prometheus(workdir, target_port: int, token: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus")
    if binary is None:
        servers.unavailable("prometheus", "Debian's prometheus is not installed (apt-get install prometheus)")
    config = workdir / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(port=target_port, token=token))
    port = servers.free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def query(prometheus: str, expression: str) -> float | None:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_prometheus_scraping_two_gunicorn_workers_counts_every_download(worker_env, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token, scrape_token = token_for(alice), "scrape-" + "p" * 30
    counts = tmp_path / "multiproc"
    counts.mkdir()
    env = {**worker_env, "PROMETHEUS_MULTIPROC_DIR": str(counts), "METRICS_TOKEN": scrape_token}
    server, base = servers.start_gunicorn(env, tmp_path / "gunicorn.log", workers=2, threads=4)
    prometheus, prometheus_url = start_prometheus(tmp_path, int(base.rsplit(":", 1)[1]), scrape_token)
    statuses: list[str] = []

    def counting_workers() -> set[str]:
        return {path.name.rsplit("_", 1)[-1] for path in counts.glob("counter_*.db")}

    try:
        curl = ["curl", "-sSfL", "-o", "/dev/null", "-w", "%{http_code}\n", "-H", f"Authorization: Bearer {token}"]
        # The kernel may hand one worker every connection of a burst: send bursts until both have served.
        for _ in range(10):
            clients = [
                subprocess.Popen([*curl, f"{base}{RESOLVE}"], stdout=subprocess.PIPE, text=True) for _ in range(21)
            ]
            statuses += [client.communicate(timeout=60)[0].strip() for client in clients]
            if len(counting_workers()) == 2:
                break
        expression = 'sum(weightgate_downloads_total{repo="acme/tiny",outcome="served"})'
        servers.wait_until(lambda: query(prometheus_url, expression) == len(statuses), timeout=60, what="the count")
    finally:
        servers.stop_process(prometheus)
        servers.stop_process(server)
    assert statuses == ["200"] * len(statuses)
    # Both workers served, and each kept its own counts in the directory /metrics adds up.
    assert len(counting_workers()) == 2
