"""Caps on a grant: complete downloads and bytes a day; past them a download is refused with 429."""

import pytest

from access.models import Grant
from distribution.models import DownloadEvent
from tests.support.downloads import body, ticket_url

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
