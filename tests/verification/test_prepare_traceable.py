"""`manage.py prepare_traceable ORG/NAME [--revision REV]`: a repo marked traceable after its revision was
released gets its served layout, written and verified in the command's process; a layout lost from storage
is written again, the same bytes as recorded, so the copies already issued stay what was received."""

import hashlib
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from access.services import grant_access
from audit.models import AuditEvent
from audit.tags import Tag
from distribution import copies
from distribution.models import Repo, TracedCopy, TracedRevision
from distribution.storage import get_storage
from tests.support.flows import published_traceable
from tests.support.personas import person, token_for
from tests.support.servers import s3_client

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/late"


def prepare(*args) -> str:
    out = io.StringIO()
    call_command("prepare_traceable", REPO, *args, stdout=out)
    return out.getvalue()


def linked_etag(client: Client, token: str, path: str) -> str:
    answer = client.head(f"/{REPO}/resolve/main/{path}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 307, answer.headers  # to the commit, with the file's headers
    return answer["X-Linked-Etag"].strip('"')


def test_a_repo_marked_traceable_after_release_gets_its_layout_and_a_lost_one_comes_back_the_same(settings, tmp_path):
    settings.TRACE_CARRIER_PERMILLE = 1000  # the test model is tiny: every candidate tensor must carry
    revision, _ = published_traceable(tmp_path, REPO, traceable=False)
    with pytest.raises(CommandError, match="not traceable: mark it in the admin"):
        prepare()
    with pytest.raises(CommandError, match="has no revision"):
        prepare("--revision", "f" * 12)
    assert not TracedRevision.objects.exists()

    Repo.objects.filter(pk=revision.repo_id).update(traceable=True)
    output = prepare("--revision", revision.commit[:12])
    assert "writing its served base" in output and "smoke pass" in output
    assert output.strip().endswith("served layout verified; each recipient now gets their own copy")
    layout = TracedRevision.objects.get(revision=revision)
    assert revision.runs.first().checks.filter(name="served", code="ServedLayoutVerified", status="pass").exists()
    assert AuditEvent.objects.filter(tag=Tag.SERVED_LAYOUT_PREPARED).count() == 1

    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    path = next(iter(layout.files))
    issued = linked_etag(Client(), token_for(alice), path)
    assert issued == TracedCopy.objects.get(username="alice").files[path]["sha256"]
    assert issued != revision.files.get(path=path).sha256

    base = get_storage(revision.storage_backend).path(layout.storage_key(path))
    base.unlink()
    copies._served.clear()  # as a web process started after the loss has it
    output = prepare()  # the latest released revision
    assert f"{REPO}@{revision.commit} (released): preparing its served layout" in output
    assert "served layout verified" in output
    rebuilt = TracedRevision.objects.get(revision=revision)
    assert (rebuilt.pk, rebuilt.files, rebuilt.key_id) == (layout.pk, layout.files, layout.key_id)
    assert hashlib.sha256(base.read_bytes()).hexdigest() == layout.files[path]["sha256"]
    copies._served.clear()
    assert linked_etag(Client(), token_for(alice), path) == issued  # alice's copy is what she received

    # A layout recorded before prefix states were: preparing it again records them, and changes nothing else.
    states = {file: entry.pop("prefix_state") for file, entry in rebuilt.files.items()}
    rebuilt.save(update_fields=["files"])
    prepare()
    again = TracedRevision.objects.get(revision=revision)
    assert {file: entry["prefix_state"] for file, entry in again.files.items()} == states
    assert again.pk == layout.pk and again.files == layout.files
    copies._served.clear()
    assert linked_etag(Client(), token_for(alice), path) == issued


def test_reverify_checks_the_served_layout_and_withdraws_a_revision_whose_served_base_changed(settings, tmp_path):
    settings.TRACE_CARRIER_PERMILLE = 1000
    revision, _ = published_traceable(tmp_path, REPO)
    layout = TracedRevision.objects.get(revision=revision)
    out = io.StringIO()
    call_command("reverify", REPO, stdout=out)
    assert "every check passed (released)" in out.getvalue()
    assert revision.runs.first().checks.filter(name="served", code="ServedLayoutVerified", status="pass").exists()

    path = next(iter(layout.files))
    base = get_storage(revision.storage_backend).path(layout.storage_key(path))
    changed = bytearray(base.read_bytes())
    changed[layout.files[path]["prefix_size"] - 1] ^= 0x01  # the lowest bit of the prefix's last weight
    base.write_bytes(bytes(changed))
    with pytest.raises(CommandError, match="1 revision"):
        call_command("reverify", REPO, stdout=io.StringIO())
    revision.refresh_from_db()
    assert revision.state == "withdrawn"
    assert f"the served base of {path} has" in revision.failure_reason
    assert f"prepare_traceable {REPO} --revision {revision.commit[:12]}" in revision.failure_reason
    failed = revision.runs.first().checks.get(name="served", status="fail")
    assert (failed.code, failed.file) == ("ServedLayoutChanged", path)


def test_on_s3_the_layout_records_each_bases_etag_and_a_layout_without_them_gets_them_when_prepared_again(
    settings, s3_endpoint, tmp_path
):
    """Web processes read and stream each base at the ETag recorded (distribution.copies); a layout recorded
    before ETags were is given them by prepare_traceable, and nothing else of it changes."""
    settings.TRACE_CARRIER_PERMILLE = 1000
    revision, _ = published_traceable(tmp_path, REPO, "s3")
    layout = TracedRevision.objects.get(revision=revision)
    bucket = s3_client(s3_endpoint)
    for path, entry in layout.files.items():
        head = bucket.head_object(Bucket=s3_endpoint.bucket, Key=layout.storage_key(path))
        assert entry["etag"] == head["ETag"].strip('"'), path

    recorded = {path: entry.pop("etag") for path, entry in layout.files.items()}
    layout.save(update_fields=["files"])
    prepare("--revision", revision.commit[:12])
    again = TracedRevision.objects.get(revision=revision)
    assert {path: entry["etag"] for path, entry in again.files.items()} == recorded
    assert again.pk == layout.pk
