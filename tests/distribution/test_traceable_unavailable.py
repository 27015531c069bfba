"""A traceable copy this host cannot make or send (no trace key for the revision, no signing key, a served
base gone from storage): a 503 that says what the operator must do, an error line for the operator, and
nothing half-issued (no copy recorded without its bytes)."""

import json
import logging
import secrets
import time
from types import SimpleNamespace

import pytest
from django.test import override_settings
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import _http

from audit.models import AuditEvent
from audit.tags import Tag
from distribution import copies
from distribution.models import TracedCopy, TracedRevision
from distribution.storage import get_storage
from tests.support.flows import http

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/traced"


def refused(answer, *phrases) -> str:
    status, headers, body = answer
    assert status == 503, body
    message = headers["X-Error-Message"]
    assert not body or json.loads(body)["error"] == message  # HEAD has no body
    # A Retry-After of minutes held the Hub client and curl --retry that long per retry before they told anyone.
    assert "Retry-After" not in headers
    for phrase in phrases:
        assert phrase in message
    return message


def test_a_copy_this_host_cannot_make_is_refused_with_what_to_do_and_nothing_is_issued(
    live_server, traced, tmp_path, caplog, fresh_process_state, monkeypatch
):
    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    path = next(iter(layout.files))
    url = f"{live_server.url}/{REPO}/resolve/{revision.commit}/{path}"
    caplog.set_level(logging.ERROR, logger="hub.errors")

    # A web host with neither SIGNING_KEY nor a key generated before: it must not make one of its own.
    with override_settings(SIGNING_KEY="", SIGNING_KEY_GENERATED_PATH=tmp_path / "no-key.pem"):
        refused(http("HEAD", url, token=people["alice"]), "SIGNING_KEY_FILE")
        assert not (tmp_path / "no-key.pem").exists()

    # A web host whose TRACE_KEY is not the one the revision was marked with.
    with override_settings(TRACE_KEY=secrets.token_hex(32), TRACE_KEY_FALLBACKS=[]):
        copies._served.clear()
        refused(http("GET", url, token=people["alice"]), "TRACE_KEY", layout.key_id)
        refused(http("GET", f"{live_server.url}/api/models/{REPO}/tree/main", token=people["alice"]), "TRACE_KEY")
    assert not TracedCopy.objects.exists()
    assert not AuditEvent.objects.filter(tag=Tag.COPY_ISSUED).exists()
    assert any("TRACE_KEY" in line.getMessage() and "not configured" in line.getMessage() for line in caplog.records)

    # Bob's copy is issued while everything is in place; then the served base disappears from storage.
    status, _, _ = http("HEAD", url, token=people["bob"])
    assert status == 200 and TracedCopy.objects.filter(username="bob").count() == 1
    _, redirect, _ = http("GET", url, token=people["bob"])
    ticket = live_server.url + redirect["Location"]
    get_storage(revision.storage_backend).path(layout.storage_key(path)).unlink()
    fix = f"prepare_traceable {REPO} --revision {revision.commit[:12]}"
    refused(http("GET", ticket), fix)  # no byte of bob's copy goes out
    refused(http("HEAD", url, token=people["alice"]), fix)  # and alice's is not issued
    assert list(TracedCopy.objects.values_list("username", flat=True)) == ["bob"]
    assert AuditEvent.objects.filter(tag=Tag.COPY_ISSUED).count() == 1
    assert any(layout.storage_key(path) in line.getMessage() for line in caplog.records)

    # The real Hub client retries a 503 on its own backoff, then fails with the message as its cause; a
    # Retry-After of 300 s made it wait 301 s before each of five retries. Its waits are recorded, not slept.
    waits = []
    monkeypatch.setattr(_http, "time", SimpleNamespace(time=time.time, monotonic=time.monotonic, sleep=waits.append))
    with pytest.raises(LocalEntryNotFoundError) as failed:
        fetch = dict(revision=revision.commit, endpoint=live_server.url, token=people["alice"])
        hf_hub_download(REPO, path, **fetch, cache_dir=tmp_path / "hub")
    assert fix in str(failed.value.__cause__)
    assert waits and max(waits) < 10


def test_a_recorded_prefix_state_that_does_not_fit_its_base_is_refused_and_nothing_is_issued(
    live_server, traced, fresh_process_state
):
    revision, _, people = traced
    layout = TracedRevision.objects.get(revision=revision)
    path = next(iter(layout.files))
    words = layout.files[path]["prefix_state"]["h"]
    words[0] = f"{int(words[0], 16) ^ 1:08x}"  # a damaged record: digests from it would name other bytes
    layout.save(update_fields=["files"])
    url = f"{live_server.url}/{REPO}/resolve/{revision.commit}/{path}"
    refused(http("GET", url, token=people["alice"]), "prepare_traceable")
    assert not TracedCopy.objects.exists()
