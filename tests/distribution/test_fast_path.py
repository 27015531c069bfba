"""Repeated redirects to S3 answered from the checks made a moment ago, with their events spooled.

On a real SeaweedFS and PostgreSQL; the spool's thread and the killed process are real too.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access.models import AccessRequest, ApiToken, Grant, User, hash_token
from access.services import decide
from audit.chain import first_break
from audit.models import AuditEvent
from distribution.downloads import channels, fast_path
from distribution.downloads import remembered as remembered_module
from distribution.downloads import spool as event_spool
from distribution.models import DownloadEvent
from hub import rate_limits
from tests.support.downloads import early_in_a_window
from tests.support.personas import token_for
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.django_db(transaction=True)
SHARD = "model-00001-of-00002.safetensors"
URL = f"/acme/tiny/resolve/main/{SHARD}"


def get(client, token, url=URL):
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")


def queries_of(action):
    with CaptureQueriesContext(connection) as queries:
        response = action()
    return response, len(queries)


def test_a_repeated_redirect_is_answered_without_the_database_and_recorded(client, s3_release, fast):
    revision, checkpoint, token = s3_release
    first, checked = queries_of(lambda: get(client, token))
    second, used = queries_of(lambda: get(client, token))
    assert first.status_code == second.status_code == 302
    assert checked > 0 and used == 0
    for header in ("ETag", "X-Repo-Commit", "X-Linked-Size", "Content-Disposition", "RateLimit-Policy"):
        assert first[header] == second[header]
    assert first["RateLimit"] != second["RateLimit"]  # the second was counted too
    import requests

    assert requests.get(second["Location"], timeout=30).content == (checkpoint / SHARD).read_bytes()

    # Both wait in the spool: the first was checked in full, only the writing of its event deferred.
    assert DownloadEvent.objects.count() == 0
    assert event_spool.spool().ship() == 2
    events = list(DownloadEvent.objects.order_by("created_at"))
    assert [(e.username, e.channel, e.status, e.path, e.commit) for e in events] == [
        ("alice", "s3-redirect", 302, SHARD, revision.commit)
    ] * 2
    assert events[1].grant_id == events[0].grant_id and events[1].token_id == events[0].token_id
    served = AuditEvent.objects.filter(tag="distribution:download:served").order_by("sequence")
    assert [event.data["download_event"] for event in served] == [e.pk for e in events]
    assert first_break() is None


def test_revoking_the_grant_ends_the_fast_path_at_once(client, s3_release, fast):
    _, _, token = s3_release
    assert get(client, token).status_code == get(client, token).status_code == 302
    # A reviewer rejects alice after accepting her, which revokes her grant (and is audited).
    decide(Grant.objects.get().request, status=AccessRequest.State.REJECTED, reviewer=None, reason="ended")
    refused = get(client, token)
    assert refused.status_code == 403 and refused["X-Error-Code"] == "GatedRepo"


def test_a_token_expiring_while_its_decision_is_remembered_stops_at_once(client, s3_release, fast, settings):
    settings.DOWNLOAD_DECISION_SECONDS = 60
    token = token_for(User.objects.get(username="alice"), expires_at=timezone.now() + timedelta(seconds=2))
    assert get(client, token).status_code == get(client, token).status_code == 302  # the second from memory
    time.sleep(max(0, (ApiToken.objects.get(digest=hash_token(token)).expires_at - timezone.now()).total_seconds()))
    refused = get(client, token)
    assert refused.status_code == 401 and "this token expired at" in refused["X-Error-Message"]


def test_a_change_made_by_another_process_reaches_the_decision_within_its_lifetime(client, s3_release, fast, settings):
    settings.DOWNLOAD_DECISION_SECONDS = 1
    _, _, token = s3_release
    assert get(client, token).status_code == 302
    # What another process's revocation looks like from here: the row changes, no signal arrives.
    Grant.objects.update(revoked_at=timezone.now())
    assert get(client, token).status_code == 302  # the documented window
    time.sleep(1.1)
    assert get(client, token).status_code == 403


def test_a_repeat_is_answered_before_the_rest_of_the_middleware(client, s3_release, fast):
    _, _, token = s3_release
    first, second = get(client, token), get(client, token)
    assert first.status_code == second.status_code == 302
    assert first["X-Frame-Options"] == "DENY"  # the full path went through every middleware
    assert "X-Frame-Options" not in second  # the repeat left before XFrameOptionsMiddleware...
    assert second["X-Content-Type-Options"] == "nosniff"  # ...and after SecurityMiddleware
    # A host this portal does not serve is refused as on the full path.
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="evil.example").status_code == 400
    # HEAD asks for metadata, never answered from a decision.
    assert queries_of(lambda: client.head(URL, HTTP_AUTHORIZATION=f"Bearer {token}"))[1] > 0


def age(key, seconds: float) -> None:
    """Make the decision for `key` as old as `seconds`."""
    born, decision = fast_path.decisions.entries[key]
    fast_path.decisions.entries[key] = (born - seconds, decision)


def only_key() -> tuple:
    (key,) = fast_path.decisions.entries
    return key


def test_one_request_checks_again_before_the_decision_ends_while_the_others_use_it(client, s3_release, fast):
    _, _, token = s3_release
    get(client, token)
    key, decision = only_key(), fast_path.decisions.entries[only_key()][1]
    age(key, 1.6)  # of 2 s: past the point where a refresh is due
    with ThreadPoolExecutor(8) as pool:  # many requests at that moment: one of them checks again
        found = list(pool.map(lambda _: fast_path.decisions.lookup(key), range(64)))
    assert sorted(refresh for _, refresh in found) == [False] * 63 + [True]
    assert all(value is decision for value, _ in found)
    assert fast_path.decisions.lookup(key) == (decision, False)  # and until it is done, nobody else
    fast_path.decisions.release(key, decision)  # a check that did not confirm it: it goes
    assert fast_path.decisions.lookup(key) is None

    get(client, token)
    age(only_key(), 1.6)
    refreshed, checked = queries_of(lambda: get(client, token))
    assert refreshed.status_code == 302 and checked > 0  # the request that refreshed it went through the checks
    assert queries_of(lambda: get(client, token))[1] == 0  # and the next ones use the new decision
    assert time.monotonic() - fast_path.decisions.entries[only_key()][0] < 1


def test_a_refresh_that_is_refused_ends_the_decision(client, s3_release, fast):
    _, _, token = s3_release
    get(client, token)
    Grant.objects.update(revoked_at=timezone.now())  # from "another process": no signal here
    assert get(client, token).status_code == 302  # within the documented window
    age(only_key(), 1.6)
    assert get(client, token).status_code == 403  # the refresh saw the revocation
    assert not fast_path.decisions.entries
    assert get(client, token).status_code == 403


def test_a_check_that_began_before_access_changed_is_not_remembered(client, s3_release, fast, monkeypatch):
    _, _, token = s3_release
    checked_in_full = channels.serve

    def access_changes_meanwhile(*args, **kwargs):
        fast_path.forget()  # what a revocation committed by another request now does here
        return checked_in_full(*args, **kwargs)

    monkeypatch.setattr(channels, "serve", access_changes_meanwhile)
    assert get(client, token).status_code == 302
    assert not fast_path.decisions.entries  # its outcome may predate the change: not kept
    monkeypatch.setattr(channels, "serve", checked_in_full)
    assert get(client, token).status_code == 302
    assert len(fast_path.decisions.entries) == 1


def test_a_grant_that_expires_is_not_used_past_its_end(client, s3_release, fast):
    _, _, token = s3_release
    Grant.objects.update(expires_at=timezone.now() + timezone.timedelta(seconds=1))
    assert get(client, token).status_code == get(client, token).status_code == 302
    time.sleep(1.1)  # the decision (2 s) outlives the grant
    refused = get(client, token)
    assert refused.status_code == 403 and refused["X-Error-Code"] == "GatedRepo"


def test_remembered_entries_stay_bounded_and_keep_the_live_ones():
    remembered = remembered_module.Remembered(lambda: 2)
    for n in range(remembered_module.MAX_ENTRIES - 1):
        remembered.put(("old", n), n)
    for key in list(remembered.entries):  # all but one have expired
        remembered.entries[key] = (remembered.entries[key][0] - 3, remembered.entries[key][1])
    remembered.put(("live",), "kept")
    remembered.put(("new",), "added")  # the cap is reached: the expired ones go
    assert set(remembered.entries) == {("live",), ("new",)}
    for n in range(remembered_module.MAX_ENTRIES):  # live ones filling it up: it starts again, bounded
        remembered.put(("busy", n), n)
    assert len(remembered.entries) <= remembered_module.MAX_ENTRIES


def test_spool_keys_differ_between_forked_processes():
    parent = {event_spool.new_key() for _ in range(3)}
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writer, event_spool.new_key().encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    key = os.read(reader, 64).decode()
    os.close(reader)
    assert len(parent) == 3 and key not in parent
    assert key[:16] != next(iter(parent))[:16]  # the child drew a tag of its own
    assert all(len(k) <= 32 for k in (*parent, key))


def test_without_a_writable_spool_the_request_is_checked_and_recorded_in_full(client, s3_release, fast, monkeypatch):
    _, _, token = s3_release
    assert get(client, token).status_code == 302

    def full_disk(self, line):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as disk:
        disk.setattr(event_spool.EventSpool, "append", full_disk)
        response, used = queries_of(lambda: get(client, token))
    assert response.status_code == 302 and used > 0
    assert DownloadEvent.objects.count() == 1  # the second, checked and written at once
    assert event_spool.spool().ship() == 1  # the first, from the spool
    assert DownloadEvent.objects.count() == 2 and first_break() is None


def test_capped_grants_and_sessions_always_take_the_full_checks(client, s3_release, fast):
    _, _, token = s3_release
    Grant.objects.update(max_bytes_per_day=10**12)
    get(client, token)
    assert DownloadEvent.objects.count() == 1  # a cap counts events: written before the answer
    assert queries_of(lambda: get(client, token))[1] > 0
    client.force_login(Grant.objects.get().user)
    client.get(URL)
    assert queries_of(lambda: client.get(URL))[1] > 0


def test_the_rate_limit_applies_on_the_fast_path(client, s3_release, fast, settings):
    settings.DOWNLOAD_RATE_LIMIT = (3, 60)
    early_in_a_window(60)
    _, _, token = s3_release
    answers = [get(client, token).status_code for _ in range(4)]
    assert answers == [302, 302, 302, 429]


def spooled(**changes) -> dict:
    """A spool line for alice's download of the shard, as the fast path writes it."""
    from django.test import RequestFactory

    from distribution.downloads.events import Downloader
    from distribution.models import RevisionFile

    stored = RevisionFile.objects.select_related("revision__repo").get(path=SHARD)
    grant = Grant.objects.get()
    request = RequestFactory().get(URL, HTTP_USER_AGENT="curl/8", REMOTE_ADDR="192.0.2.7")
    who = Downloader(grant.user, grant, None)
    line = event_spool.spooled_line(request, stored, who, channel="s3-redirect", status=302, expected=10)
    return {**line, **changes}


def test_a_batch_stored_twice_is_stored_once(s3_release):
    lines = [spooled(), spooled()]
    assert event_spool.store(lines) == 2
    assert event_spool.store(lines) == 0
    assert DownloadEvent.objects.count() == 2 and first_break() is None
    event = DownloadEvent.objects.get(spool_key=lines[0]["key"])
    assert (event.ip, event.user_agent, event.username) == ("192.0.2.7", "curl/8", "alice")


def test_a_line_that_cannot_be_stored_is_set_aside_and_never_blocks_the_rest(s3_release, tmp_path, caplog):
    good, bad = spooled(), spooled(at="not a time")
    (tmp_path / "downloads-1-dead.jsonl").write_bytes(
        b'{"torn line\n' + json.dumps(bad).encode() + b"\n" + json.dumps(good).encode() + b"\n"
    )
    assert event_spool.ship_orphans(tmp_path) == 1
    assert DownloadEvent.objects.get().spool_key == good["key"]
    assert "not JSON" in caplog.text and bad["key"] in caplog.text  # both kept in the log


def test_a_row_deleted_before_the_events_were_stored_leaves_a_null_reference(s3_release):
    line = spooled()
    Grant.objects.all().delete()
    assert event_spool.store([line]) == 1
    assert DownloadEvent.objects.get().grant_id is None


KILLED_WRITER = """
import json, os, signal, sys
import django
django.setup()
from pathlib import Path
from distribution.downloads.spool import EventSpool
spool = EventSpool(Path(sys.argv[1]), flush_seconds=3600)
for line in json.loads(sys.argv[2]):
    spool.append(line)
print(spool.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_events_of_a_process_killed_before_storing_them_are_stored_once_by_the_next(s3_release, tmp_path, settings):
    lines = [spooled(), spooled(), spooled()]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), json.dumps(lines)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert DownloadEvent.objects.count() == 0
    settings.DOWNLOAD_SPOOL_DIR = tmp_path
    out, progress = io.StringIO(), io.StringIO()
    call_command("store_spooled_downloads", stdout=out, stderr=progress)  # what the periodic job runs, too
    assert out.getvalue().strip() == "3 spooled download event(s) stored"
    assert "1 spool file(s)" in progress.getvalue() and ": 3 event(s) stored so far" in progress.getvalue()
    assert event_spool.ship_orphans(tmp_path) == 0
    assert sorted(DownloadEvent.objects.values_list("spool_key", flat=True)) == sorted(line["key"] for line in lines)
    assert not list(tmp_path.glob("downloads-*.jsonl")) and first_break() is None


def test_a_live_process_keeps_its_file(s3_release, tmp_path):
    live = event_spool.EventSpool(tmp_path, flush_seconds=3600)
    live.append(spooled())
    assert event_spool.ship_orphans(tmp_path) == 0  # its lock is held: it ships the file itself
    assert live.ship() == 1
    live.close()
    assert not live.path.exists()


def test_processes_sharing_a_limit_never_allow_more_than_it(settings):
    from django.core.cache import cache

    cache.clear()
    limit = 100
    processes = [rate_limits.Reservations(), rate_limits.Reservations(), rate_limits.Reservations()]
    assert rate_limits.slice_size(limit) > 1  # a slice of several numbers is reserved at once
    allowed = 0
    for turn in range(400):
        number = processes[turn % 3].number("token:7", 1, limit, 60)
        allowed += number <= limit
    assert allowed == limit
