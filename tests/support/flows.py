"""Steps that several tests take: publish a tiny checkpoint and wait for the worker to judge it."""

import io
import json
import urllib.error
import urllib.request

import pytest
from django.core.management import call_command

from distribution.models import Revision
from distribution.storage import get_storage
from tests.support.servers import wait_until
from verification import tasks as verification_tasks
from verification.core.signature import SIGNATURE_PATH
from verification.core.tiny_llama import write_tiny_llama
from verification.services import run_checks_stage, run_smoke_stage

SHARD = "model-00001-of-00002.safetensors"  # the first of the two shards published_tiny_llama writes


def publish(directory, repo_id: str, storage: str) -> Revision:
    out = io.StringIO()
    call_command("publish_checkpoint", str(directory), "--repo", repo_id, "--storage", storage, stdout=out)
    return Revision.objects.get(commit=out.getvalue().strip())


def publish_undispatched(directory, repo_id: str, storage: str = "local") -> Revision:
    """Publish without sending the verification task: the test decides where it goes, or loses it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verification_tasks.verify_revision, "delay", lambda *args, **kwargs: None)
        return publish(directory, repo_id, storage)


def wait_for_verdict(revision: Revision, timeout: float = 120) -> Revision:
    def judged():
        revision.refresh_from_db()
        return revision.state in (Revision.State.VERIFIED, Revision.State.FAILED)

    wait_until(judged, timeout=timeout, interval=0.2, what=f"the worker to verify {revision}")
    return revision


def published_tiny_llama(
    tmp_path,
    repo_id: str,
    storage: str = "local",
    *,
    release: bool = True,
    verify_here: bool = False,
    config_overrides: dict | None = None,
    seed: int = 0,
    extra_files: dict[str, str] | None = None,
) -> tuple[Revision, object]:
    """Publish a tiny checkpoint and wait until it is verified (and released, by default).

    `verify_here` runs the verification in this process, for tests that need no worker; a worker
    that is running anyway may take it first, which the claim makes harmless.
    """
    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=2, seed=seed, config_overrides=config_overrides)
    for name, text in (extra_files or {}).items():
        (checkpoint / name).write_text(text)  # a model card, say
    revision = publish(checkpoint, repo_id, storage)
    if verify_here:
        run_checks_stage(revision.pk)
        run_smoke_stage(revision.pk)
    revision = wait_for_verdict(revision)
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    if release:
        call_command("release", repo_id, stdout=io.StringIO())
        revision.refresh_from_db()
    return revision, checkpoint


def flip_one_bit(path, position: int = -1) -> None:
    """Tamper with a file in place: one bit of the byte at `position`, same size."""
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def expected_release(revision: Revision, checkpoint) -> dict[str, bytes]:
    """What a download of the release must hold: the published files, and the portal's signature of them."""
    files = {f.path: (checkpoint / f.path).read_bytes() for f in revision.files.exclude(path=SIGNATURE_PATH)}
    signature = revision.files.filter(path=SIGNATURE_PATH).first()
    assert signature is not None, f"{revision} was verified but not signed"
    with get_storage(revision.storage_backend).open(signature.storage_key) as stored:
        files[SIGNATURE_PATH] = stored.read()
    return files


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None, headers: dict | None = None):
    """(status, headers, body bytes) for one request, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def traceable_checkpoint(directory, *, vocab: int = 512, seed: int = 0):
    """A small bf16 LLaMA (4 layers, hidden 128: carriers in layers 1 and 2) in `directory`. With the
    default vocabulary set TRACE_CARRIER_PERMILLE=1000 first: the model is far smaller than a real one, so
    every candidate tensor must carry; with 4096 words the default share (7%) finds carriers in each shard."""
    from tracing import synthetic

    config = synthetic.llama_config(hidden=128, intermediate=384, layers=4, heads=4, kv_heads=4, vocab=vocab)
    synthetic.write_checkpoint(directory, config, synthetic.random_weights(config, seed=seed))
    return directory


def published_traceable(
    tmp_path, repo_id: str, storage: str = "local", *, seed: int = 0, traceable: bool = True
) -> tuple[Revision, object]:
    """traceable_checkpoint published (with --traceable unless told otherwise), verified here (its served
    layout too) and released."""
    checkpoint = traceable_checkpoint(tmp_path / "traceable-checkpoint", seed=seed)
    out = io.StringIO()
    flags = ["--traceable"] if traceable else []
    call_command("publish_checkpoint", str(checkpoint), "--repo", repo_id, "--storage", storage, *flags, stdout=out)
    revision = Revision.objects.get(commit=out.getvalue().strip())
    run_checks_stage(revision.pk)
    run_smoke_stage(revision.pk)
    revision = wait_for_verdict(revision)
    assert revision.state == Revision.State.VERIFIED, revision.failure_reason
    call_command("release", repo_id, stdout=io.StringIO())
    revision.refresh_from_db()
    return revision, checkpoint
