"""Publishing checkpoints the way operators do: `manage.py publish_checkpoint` in a process of its own, and
drafts made by a real refusal; and what a publish left in storage."""

import contextlib
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from distribution.models import Revision
from distribution.publishing import PublishError, publish_checkpoint
from distribution.storage import get_storage
from tests.support.flows import http
from tests.support.servers import REPO_ROOT, s3_client

MIB = 1024 * 1024
# A tiny LLaMA of about 40 MB in three shards of 15, 10 and 15 MB: in parts of 5 MiB, 3 + 2 + 3 parts.
IN_PARTS = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 4096,
}


def local_files(directory: Path) -> dict[str, bytes]:
    """name -> bytes of each file of a checkpoint directory, to compare with what was published."""
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def publish_command(directory, repo_id: str, *flags: str) -> list[str]:
    return [sys.executable, "manage.py", "publish_checkpoint", str(directory), "--repo", repo_id, *flags]


def run_publish(directory, repo_id: str, *flags: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        publish_command(directory, repo_id, *flags), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def sha256sums(directory: Path, *, wrong: str | None = None) -> Path:
    """A SHA256SUMS of `directory` as sha256sum writes it, beside it; `wrong` gets another file's digest."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        digest = hashlib.sha256(path.read_bytes() + (b"!" if relative == wrong else b"")).hexdigest()
        lines.append(f"{digest}  {relative}")
    sums = directory.parent / f"{directory.name}.SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


def refused_draft(directory: Path, repo_id: str, *, storage: str = "local", wrong: str = "config.json") -> Revision:
    """A draft left by a real refusal: every file stored, one digest not the publisher's."""
    with pytest.raises(PublishError, match=wrong):
        publish_checkpoint(
            directory, repo_id, storage_backend=storage, expect_sha256=sha256sums(directory, wrong=wrong)
        )
    draft = Revision.objects.get(repo__org=repo_id.split("/")[0], repo__name=repo_id.split("/")[1])
    assert draft.state == Revision.State.DRAFT
    return draft


def stored_bytes(revision: Revision) -> dict[str, bytes]:
    """Each file of the revision, as storage holds it where its row says."""
    storage = get_storage(revision.storage_backend)
    files = {}
    for row in revision.files.all():
        with storage.open(row.storage_key) as handle:
            files[row.path] = handle.read()
    return files


def bucket_keys(endpoint, prefix: str) -> list[str]:
    client = s3_client(endpoint)
    return [item["Key"] for item in client.list_objects_v2(Bucket=endpoint.bucket, Prefix=prefix).get("Contents", [])]


def commit_lines(endpoint: str, token: str, operations: list[dict], repo_id: str = "acme/tiny"):
    """An NDJSON commit as the client sends it, raising the client's own error for a refusal."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    lines = [{"key": "header", "value": {"summary": "by hand"}}, *operations]
    response = get_session().post(
        f"{endpoint}/api/models/{repo_id}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
    )
    hf_raise_for_status(response)
    return response.json()


def lfs_upload_actions(base_url: str, token: str, repo_id: str, oid: str, size: int, transfer: str) -> dict:
    """What the LFS batch API answers for uploading one object by `transfer` (basic or multipart): its actions."""
    status, _, body = http(
        "POST",
        f"{base_url}/{repo_id}.git/info/lfs/objects/batch",
        token=token,
        body={"operation": "upload", "transfers": [transfer], "objects": [{"oid": oid, "size": size}]},
    )
    assert status == 200, body
    return json.loads(body)["objects"][0]["actions"]


@contextlib.contextmanager
def s3_operations():
    """The names of the S3 operations the portal's own client sends inside the block (HeadObject, ...)."""
    asked: list[str] = []
    events = get_storage("s3").client.meta.events
    record = lambda model, **kwargs: asked.append(model.name)  # noqa: E731
    events.register("before-call.s3", record)
    try:
        yield asked
    finally:
        events.unregister("before-call.s3", record)
