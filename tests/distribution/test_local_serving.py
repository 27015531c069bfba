"""Serving from local storage: the redirect to a ticket, byte ranges, and refusals that serve nothing."""

import time

import pytest
from django.test import override_settings
from django.utils import timezone

from access.models import Grant
from distribution.downloads.tickets import issue_ticket
from distribution.models import DownloadEvent
from tests.support.downloads import body, ticket_url
from tests.support.flows import SHARD

pytestmark = pytest.mark.django_db


def test_head_on_resolve_gives_the_metadata_the_hub_client_needs(client, setup):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {setup['token']}"}
    pinned = client.head(f"/acme/tiny/resolve/main/{SHARD}", **auth)
    # `main` is pinned to its commit, where the client's GET then goes: a release landing in between changes nothing.
    assert pinned.status_code == 307
    assert pinned["Location"] == f"/acme/tiny/resolve/{setup['revision'].commit}/{SHARD}"
    response = client.head(pinned["Location"], **auth)
    stored = setup["stored"]
    assert response.status_code == 200
    assert pinned["X-Repo-Commit"] == response["X-Repo-Commit"] and pinned["X-Linked-Etag"] == response["X-Linked-Etag"]
    assert response["X-Repo-Commit"] == setup["revision"].commit
    assert response["X-Linked-Etag"] == f'"{stored.sha256}"'
    assert response["X-Linked-Size"] == str(len(setup["bytes"]))
    assert response["Content-Length"] == str(len(setup["bytes"]))
    assert not DownloadEvent.objects.exists()


def test_the_whole_file_comes_with_its_etag_and_a_record(client, setup):
    response = client.get(ticket_url(client, setup))
    assert response.status_code == 200
    assert response["ETag"] == f'"{setup["stored"].sha256}"'
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Disposition"] == f'attachment; filename="{SHARD}"'
    assert body(response) == setup["bytes"]  # the test client closes the response once it is read
    event = DownloadEvent.objects.get()
    assert (event.status, event.bytes_expected, event.bytes_served) == (200, len(setup["bytes"]), len(setup["bytes"]))
    assert event.user == setup["alice"] and event.grant is not None


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=10-999999999", 10, None)],
)
def test_a_single_range_answers_206_with_exactly_those_bytes(client, setup, header, first, last):
    data = setup["bytes"]
    response = client.get(ticket_url(client, setup), HTTP_RANGE=header)
    expected = data[first:] if last is None else data[first : last + 1]
    start = first if first >= 0 else len(data) + first
    assert response.status_code == 206
    assert body(response) == expected
    assert response["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    assert response["Content-Length"] == str(len(expected))


def test_under_gunicorn_the_file_goes_out_corked_and_the_last_segment_is_let_go(client, setup):
    """TCP_CORK on a real loopback connection, handed over as gunicorn does (environ["gunicorn.socket"])."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    downloader = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()

    def corked() -> int:
        return served.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)

    try:
        response = client.get(ticket_url(client, setup), **{"gunicorn.socket": served})
        assert response.status_code == 200 and corked() == 1  # while the file goes out
        assert body(response) == setup["bytes"]  # the test client closes the response after the last byte
        assert corked() == 0
    finally:
        for end in (served, downloader, listener):
            end.close()


def test_a_range_past_the_end_answers_416_with_the_size(client, setup):
    size = len(setup["bytes"])
    response = client.get(ticket_url(client, setup), HTTP_RANGE=f"bytes={size}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{size}"
    assert not DownloadEvent.objects.exists()


def test_if_range_with_another_version_sends_the_whole_file(client, setup):
    response = client.get(ticket_url(client, setup), HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"' + "0" * 64 + '"')
    assert response.status_code == 200
    assert body(response) == setup["bytes"]
    matching = client.get(
        ticket_url(client, setup), HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=f'"{setup["stored"].sha256}"'
    )
    assert matching.status_code == 206


def test_a_tampered_ticket_serves_nothing(client, setup):
    url = ticket_url(client, setup)
    prefix, ticket, name = url.rsplit("/", 2)
    for position in (0, len(ticket) // 2, len(ticket) - 1):
        flipped = "A" if ticket[position] != "A" else "B"
        forged = ticket[:position] + flipped + ticket[position + 1 :]
        response = client.get(f"{prefix}/{forged}/{name}")
        assert response.status_code == 403, position
        assert b"not valid" in response.content
    assert client.get(f"{prefix}/{ticket}/config.json").status_code == 403  # another file's name
    assert not DownloadEvent.objects.exists()


def test_a_ticket_for_one_file_cannot_be_pointed_at_another(client, setup):
    other = setup["revision"].files.get(path="config.json")
    forged = issue_ticket(file_id=setup["stored"].pk, user_id=setup["alice"].pk, grant_id=None, token_id=None)
    assert client.get(f"/files/{forged}/{other.filename}").status_code == 403


@override_settings(DOWNLOAD_REDIRECT_SECONDS=1)
def test_an_expired_ticket_says_so_and_serves_nothing(client, setup):
    url = ticket_url(client, setup)
    time.sleep(2.1)
    response = client.get(url)
    assert response.status_code == 403
    assert b"expired" in response.content
    assert not DownloadEvent.objects.exists()


def test_revoking_the_grant_stops_a_ticket_already_issued(client, setup):
    url = ticket_url(client, setup)
    Grant.objects.update(revoked_at=timezone.now())
    response = client.get(url)
    assert response.status_code == 403
    assert response["X-Error-Code"] == "GatedRepo"
    assert not DownloadEvent.objects.exists()


def test_path_tricks_find_nothing(client, setup):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {setup['token']}"}
    for path in ("../../../etc/passwd", "..%2F..%2Fsecret_key", "/etc/passwd", "config.json/../config.json"):
        response = client.get(f"/acme/tiny/resolve/main/{path}", **auth)
        assert response.status_code == 404, path
    assert not DownloadEvent.objects.exists()


def test_an_invalid_token_is_refused_not_treated_as_anonymous(client, setup):
    response = client.get(f"/acme/tiny/resolve/main/{SHARD}", HTTP_AUTHORIZATION="Bearer wg_forged")
    assert response.status_code == 401
    assert "Invalid credentials" in response["X-Error-Message"]


def test_with_a_front_server_the_portal_hands_the_file_over_by_x_accel_redirect(client, setup, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = "/protected/"
    response = client.get(ticket_url(client, setup))
    assert response["X-Accel-Redirect"] == f"/protected/{setup['stored'].storage_key}"
    assert response.content == b"" and response["ETag"] == f'"{setup["stored"].sha256}"'
    event = DownloadEvent.objects.get()
    assert (event.channel, event.bytes_served) == ("local", None)
