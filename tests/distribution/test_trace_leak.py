"""End to end: three people download a traceable repo with the Hugging Face client, each copy verifies
with `model_signing`, and trace_leak names the one whose shard leaked as fp16, and nobody for the
published original; unreadable input is exit code 2."""

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from huggingface_hub import snapshot_download
from safetensors.torch import load_file, save_file

from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import TracedCopy, TracedRevision
from tests.support.flows import http
from tests.verification.test_release_signing import fetch_public_key, model_signing_verify

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/traced"


def trace_leak(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("trace_leak", *map(str, args), stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


def test_three_copies_verify_and_bobs_shard_as_fp16_names_bob(live_server, traced, tmp_path):
    revision, checkpoint, tokens = traced
    public_key = fetch_public_key(f"{live_server.url}/api/v1/signing-key.pem", tmp_path / "key.pem")
    folders = {}
    for name, token in tokens.items():
        folders[name] = Path(snapshot_download(REPO, endpoint=live_server.url, token=token, local_dir=tmp_path / name))
        verified = model_signing_verify(folders[name], public_key)
        assert verified.returncode == 0, verified.stderr
    shard = next(iter(TracedRevision.objects.get(revision=revision).files))
    digests = {name: hashlib.sha256((folder / shard).read_bytes()).hexdigest() for name, folder in folders.items()}
    assert len(set(digests.values())) == 3

    leak = tmp_path / "leak" / "weights.safetensors"
    leak.parent.mkdir()
    save_file({k: v.to(torch.float16) for k, v in load_file(folders["bob"] / shard).items()}, leak)
    code, output = trace_leak(leak, "--json")
    assert code == 0, output
    verdict = json.loads(output)["verdicts"][0]
    assert [accused["user"] for accused in verdict["named"]] == ["bob"]
    assert verdict["named"][0]["score"] >= 8 and verdict["highest_other"] < 8
    assert verdict["named"][0]["grant"] == TracedCopy.objects.get(username="bob").grant_id

    code, output = trace_leak(checkpoint, "--repo", REPO)
    assert code == 1, output
    assert "nobody" in output
    assert AuditEvent.objects.filter(tag=Tag.LEAK_TRACED).count() == 2


def test_a_byte_exact_shard_is_named_by_its_digest(live_server, traced, tmp_path):
    revision, _, tokens = traced
    shard = next(iter(TracedRevision.objects.get(revision=revision).files))
    url = f"{live_server.url}/{REPO}/resolve/main/{shard}"
    _, redirect, _ = http("GET", url, token=tokens["carol"])
    status, _, body = http("GET", live_server.url + redirect["Location"])
    assert status == 200
    (tmp_path / shard).write_bytes(body)
    code, output = trace_leak(tmp_path / shard, "--repo", REPO)
    assert code == 0, output
    assert "carol: byte-exact copy" in output


def test_unreadable_input_is_exit_code_2(traced, tmp_path):
    garbage = tmp_path / "leak.safetensors"
    garbage.write_bytes(b"\x00garbage" * 100)
    assert trace_leak(garbage)[0] == 2
    assert trace_leak(tmp_path / "absent.gguf")[0] == 2
