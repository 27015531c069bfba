"""The report of who obtained which model, checked against downloads the test made itself."""

import csv
import io
import json

import pytest
from django.core.management import call_command

from access.services import grant_access
from tests.support.flows import published_tiny_llama
from tests.support.personas import person, token_for

pytestmark = pytest.mark.django_db
SHARD = "model-00001-of-00002.safetensors"


def fetch(client, token, path, **headers):
    response = client.get(f"/acme/tiny/resolve/main/{path}", HTTP_AUTHORIZATION=f"Bearer {token}")
    body = client.get(response["Location"], **headers)
    return b"".join(body.streaming_content) if body.streaming else body.content


def test_the_report_knows_who_got_everything_and_who_got_part(client, tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/tiny", verify_here=True)
    alice, bob = person("alice"), person("bob")
    for someone in (alice, bob):
        grant_access(someone, revision.repo, granted_by=None)
    alice_token, bob_token = token_for(alice), token_for(bob)
    files = [f.path for f in revision.files.all()]
    shard = (checkpoint / SHARD).read_bytes()
    for path in files:
        if path == SHARD:  # alice's shard arrives in two pieces: cut, then resumed
            fetch(client, alice_token, path, HTTP_RANGE=f"bytes=0-{len(shard) // 2 - 1}")
            fetch(client, alice_token, path, HTTP_RANGE=f"bytes={len(shard) // 2}-")
        else:
            fetch(client, alice_token, path)
    fetch(client, bob_token, "config.json")
    fetch(client, bob_token, SHARD, HTTP_RANGE="bytes=0-99")

    out, progress = io.StringIO(), io.StringIO()
    call_command("audit_report", "--repo", "acme/tiny", "--format", "json", stdout=out, stderr=progress)
    rows = {row["username"]: row for row in json.loads(out.getvalue())}
    assert "2 row(s) in" in progress.getvalue()  # on stderr: stdout holds only the report
    total = sum(f.size for f in revision.files.all())
    assert rows["alice"]["complete"] is True and rows["alice"]["bytes_served"] == total
    assert rows["alice"]["files_served"] == rows["alice"]["files_in_revision"] == len(files)
    assert rows["bob"]["complete"] is False and rows["bob"]["files_served"] == 2
    config_size = revision.files.get(path="config.json").size
    assert rows["bob"]["bytes_served"] == config_size + 100
    assert rows["alice"]["revision"] == revision.commit
    assert rows["alice"]["first_download"] <= rows["alice"]["last_download"]

    out = io.StringIO()
    call_command("audit_report", "--user", "bob", stdout=out)
    lines = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(line["username"], line["complete"]) for line in lines] == [("bob", "False")]
