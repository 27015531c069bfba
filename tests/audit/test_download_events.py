"""Audit events of downloads: one for each download served, even from several processes at once."""

import subprocess

import pytest
from django.test import Client

from access.services import grant_access
from audit.chain import first_break
from distribution.models import DownloadEvent
from tests.support import servers
from tests.support.audit import AGENT, events, only_event
from tests.support.flows import SHARD, published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db
CURL = ("curl", "-sSfL", "-o", "/dev/null", "-w", "%{http_code}")
RESOLVE = f"acme/tiny/resolve/main/{SHARD}"


def test_each_download_served_is_recorded_with_its_download_event(release, chain_checked):
    revision, token = release
    grantee = Client(HTTP_USER_AGENT=AGENT)
    response = grantee.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 302
    ticket_url = response["Location"]
    assert grantee.head(ticket_url).status_code == 200  # a HEAD serves no bytes and records nothing
    assert not events("distribution:download:served")
    response = grantee.get(ticket_url, HTTP_RANGE="bytes=0-9")
    assert response.status_code == 206
    b"".join(response.streaming_content)
    served = only_event("distribution:download:served")
    download = DownloadEvent.objects.get()
    assert (served.actor_username, served.subject_username, served.repo_id) == ("alice", "alice", "acme/tiny")
    assert served.data == {
        "download_event": download.pk,
        "commit": revision.commit,
        "path": SHARD,
        "status": 206,
        "range": "bytes=0-9",
        "channel": "local",
    }
    assert (served.ip, served.user_agent) == (download.ip, download.user_agent) == ("127.0.0.1", AGENT)


@pytest.mark.django_db(transaction=True)
def test_downloads_served_by_several_processes_at_once_leave_one_event_each_and_one_chain(worker_env, tmp_path):
    revision, _ = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    token = token_for(alice)
    server, base = servers.start_gunicorn(worker_env, tmp_path / "gunicorn.log", workers=3, threads=2)
    try:
        # Each curl is a process of its own: the resolve redirect, then the ranged download it leads to.
        clients = [
            subprocess.Popen(
                [*CURL, "-H", f"Authorization: Bearer {token}", "-r", f"{offset}-{offset + 9}", f"{base}/{RESOLVE}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for offset in range(30)
        ]
        statuses = [client.communicate(timeout=120)[0] for client in clients]
    finally:
        servers.stop_process(server)
    assert statuses == ["206"] * 30
    served = events("distribution:download:served")
    assert len(served) == DownloadEvent.objects.count() == 30
    assert {event.data["download_event"] for event in served} == set(DownloadEvent.objects.values_list("pk", flat=True))
    assert first_break() is None
