"""Batches written with COPY (PostgreSQL) are the rows the ORM's INSERT would have written."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import chain
from audit.bulk_rows import COPY_FROM_ROWS, insert_all
from audit.chain import first_break
from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import DownloadEvent

pytestmark = pytest.mark.django_db


AT = timezone.now()


def download_events(marker: str, at=AT) -> list[DownloadEvent]:
    """Events with every kind of value a download records, the awkward ones included."""
    return [
        DownloadEvent(
            created_at=at - timezone.timedelta(seconds=n),
            username=f"{marker}-ünïcode-{n}",
            repo_id="acme/tiny",
            commit="c" * 40,
            path=f"dir/model-{n}.safetensors",
            channel="s3-redirect",
            range_requested="bytes=10-" if n % 2 else "",
            status=302,
            bytes_expected=None if n % 3 else 10**12 + n,
            ip=("2001:db8::1", "192.0.2.7", None, "")[n % 4],  # "" is stored as NULL
            user_agent='tab\tquote" backslash\\ newline\n',
        )
        for n in range(COPY_FROM_ROWS + 3)
    ]


def as_stored(marker: str) -> list[tuple]:
    fields = [f.attname for f in DownloadEvent._meta.concrete_fields if f.attname != "id"]
    rows = DownloadEvent.objects.filter(username__startswith=marker).order_by("path").values_list(*fields)
    return [tuple(value.replace(marker, "") if isinstance(value, str) else value for value in row) for row in rows]


def test_copy_writes_the_rows_the_orm_would_write():
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's; on other databases insert_all is bulk_create itself")
    copied = download_events("copy")
    with CaptureQueriesContext(connection) as queries:
        insert_all(DownloadEvent, copied)
    assert any("nextval" in query["sql"] for query in queries)  # the ids were drawn for a COPY
    DownloadEvent.objects.bulk_create(download_events("orm"))
    assert as_stored("copy") == as_stored("orm") and len(as_stored("copy")) == COPY_FROM_ROWS + 3
    assert [event.pk for event in copied] == sorted(
        DownloadEvent.objects.filter(username__startswith="copy").values_list("pk", flat=True)
    )
    # Ids drawn for a COPY are the sequence's: a row added after takes the next one.
    later = DownloadEvent.objects.create(username="x", repo_id="a/b", commit="c", path="p", channel="local", status=200)
    assert later.pk > max(event.pk for event in copied)


def test_a_batch_on_the_audit_chain_keeps_its_content_and_the_chain_whole():
    data = {"nested": {"list": [1, -25, None, True]}, "text": 'ünïcode \\ " \t', "empty": {}}
    events = chain.append([chain.new_event(Tag.TOKEN_CREATED, **data, n=n) for n in range(COPY_FROM_ROWS * 2)])
    stored = list(AuditEvent.objects.filter(tag=Tag.TOKEN_CREATED).order_by("sequence"))
    assert [event.pk for event in stored] == [event.pk for event in events]
    assert [event.data for event in stored] == [{**data, "n": n} for n in range(COPY_FROM_ROWS * 2)]
    assert first_break() is None
