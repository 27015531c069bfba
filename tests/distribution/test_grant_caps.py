"""Caps on a grant: complete downloads and bytes a day; past them a download is refused with 429."""

import pytest
from django.test import Client

from access.models import Grant
from distribution.models import DownloadEvent
from tests.support.downloads import body, ticket_url
from tests.support.flows import SHARD

pytestmark = pytest.mark.django_db


def test_a_grant_capped_at_one_complete_download_refuses_a_second_but_lets_a_resume_through(client, setup):
    Grant.objects.update(max_complete_downloads=1)
    assert body(client.get(ticket_url(client, setup))) == setup["bytes"]
    second = client.get(ticket_url(client, setup))
    assert second.status_code == 429 and "1 complete download(s)" in second["X-Error-Message"]
    resumed = client.get(ticket_url(client, setup), HTTP_RANGE="bytes=100-")
    assert resumed.status_code == 206
    assert DownloadEvent.objects.count() == 2


def test_a_daily_byte_cap_stops_what_would_pass_it(client, setup):
    size = len(setup["bytes"])
    Grant.objects.update(max_bytes_per_day=size + size // 2)
    assert client.get(ticket_url(client, setup)).status_code == 200
    refused = client.get(ticket_url(client, setup))
    assert refused.status_code == 429 and "bytes a day" in refused["X-Error-Message"]
    assert DownloadEvent.objects.count() == 1


@pytest.mark.parametrize("asked", ["bytes=0-", "bytes=0-99999999", "items=0-10", "bytes=oops"])
def test_a_range_that_covers_the_file_or_is_not_understood_counts_as_a_complete_download(client, setup, asked):
    Grant.objects.update(max_complete_downloads=1)
    first = client.get(ticket_url(client, setup), HTTP_RANGE=asked)
    assert body(first) == setup["bytes"]
    again = client.get(ticket_url(client, setup))
    assert again.status_code == 429 and "1 complete download(s)" in again["X-Error-Message"]
    assert DownloadEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_downloads_at_once_against_a_cap_of_one_serve_exactly_one(live_server, setup):
    from concurrent.futures import ThreadPoolExecutor

    import requests

    Grant.objects.update(max_complete_downloads=1)
    link = live_server.url + ticket_url(Client(), setup)
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(lambda _: requests.get(link, timeout=60).status_code, range(20)))
    assert statuses == [200] + [429] * 19
    assert DownloadEvent.objects.filter(status=200).count() == 1


def test_a_capped_grants_link_to_object_storage_lives_seconds_and_each_counts(client, s3_release, settings):
    import time

    import requests

    settings.CAPPED_LINK_SECONDS = 1
    _, _, token = s3_release
    Grant.objects.update(max_complete_downloads=1)
    url = f"/acme/tiny/resolve/main/{SHARD}"
    first = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert first.status_code == 302
    time.sleep(2.5)
    assert requests.get(first["Location"], timeout=30).status_code == 403  # expired: not handed around
    second = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert second.status_code == 429 and DownloadEvent.objects.count() == 1
