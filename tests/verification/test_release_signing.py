"""Releases signed in the OpenSSF model-signing format, checked with the `model_signing` command itself
on a snapshot the Hugging Face client downloaded from the portal."""

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from huggingface_hub import snapshot_download

from access.services import grant_access
from distribution.publishing import PublishError, publish_checkpoint
from distribution.storage import get_storage
from tests.support.flows import flip_one_bit, http, published_tiny_llama
from tests.support.personas import person, token_for
from verification.core.signature import SIGNATURE_PATH, fingerprint, read_signature
from verification.models import SigningKey

pytestmark = pytest.mark.django_db(transaction=True)
MODEL_SIGNING = str(Path(sys.executable).parent / "model_signing")


def model_signing_verify(folder: Path, public_key: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            MODEL_SIGNING,
            "verify",
            "key",
            "--signature",
            str(folder / SIGNATURE_PATH),
            "--public_key",
            str(public_key),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def fetch_public_key(url: str, target: Path) -> Path:
    status, headers, body = http("GET", url)
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-pem-file"
    target.write_bytes(body)
    assert headers["X-Key-Fingerprint"] == fingerprint(body)
    return target


@pytest.fixture
def released(tmp_path):
    revision, checkpoint = published_tiny_llama(tmp_path, "acme/signed", verify_here=True)
    alice = person("alice")
    grant_access(alice, revision.repo, granted_by=None)
    return revision, checkpoint, token_for(alice)


def download(live_server, token, folder: Path, revision: str = "main") -> Path:
    return Path(
        snapshot_download("acme/signed", revision=revision, endpoint=live_server.url, token=token, local_dir=folder)
    )


def test_a_hf_snapshot_verifies_with_model_signing_and_fails_after_one_flipped_byte(live_server, released, tmp_path):
    _revision, _checkpoint, token = released
    folder = download(live_server, token, tmp_path / "snapshot")
    assert (folder / SIGNATURE_PATH).is_file()
    public_key = fetch_public_key(f"{live_server.url}/api/v1/signing-key.pem", tmp_path / "signing-key.pem")

    verified = model_signing_verify(folder, public_key)
    assert verified.returncode == 0, verified.stderr
    assert "Verification succeeded" in verified.stdout

    shard = folder / "model-00002-of-00002.safetensors"
    flip_one_bit(shard, shard.stat().st_size // 2)
    tampered = model_signing_verify(folder, public_key)
    assert tampered.returncode != 0
    assert "model-00002-of-00002.safetensors" in tampered.stderr


def test_the_signature_lists_every_published_file_with_the_sha256_verification_recorded(released):
    revision, checkpoint, _token = released
    stored = {f.path: f for f in revision.files.all()}
    bundle = get_storage(revision.storage_backend).open(stored[SIGNATURE_PATH].storage_key).read()
    assert (
        hashlib.sha256(bundle).hexdigest() == stored[SIGNATURE_PATH].sha256
        and len(bundle) == stored[SIGNATURE_PATH].size
    )
    key = SigningKey.objects.get(retired_at__isnull=True)
    signed = read_signature(bundle, key.public_pem.encode())
    published = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
    assert set(signed) == published
    for path in published:
        assert signed[path] == hashlib.sha256((checkpoint / path).read_bytes()).hexdigest()


def test_a_signature_edited_after_signing_is_refused(released):
    revision, _checkpoint, _token = released
    key = SigningKey.objects.get(retired_at__isnull=True)
    stored = revision.files.get(path=SIGNATURE_PATH)
    bundle = json.loads(get_storage(revision.storage_backend).open(stored.storage_key).read())
    bundle["dsseEnvelope"]["payload"] = bundle["dsseEnvelope"]["payload"][:-8] + "AAAAAAA="
    with pytest.raises(ValueError):
        read_signature(json.dumps(bundle).encode(), key.public_pem.encode())


def test_after_rotation_old_releases_verify_with_their_retired_key(live_server, released, tmp_path):
    _revision, _checkpoint, token = released
    old_folder = download(live_server, token, tmp_path / "old")
    old_hint = json.loads((old_folder / SIGNATURE_PATH).read_text())["verificationMaterial"]["publicKey"]["hint"]

    call_command("rotate_signing_key", stdout=io.StringIO())
    new_revision, _ = published_tiny_llama(tmp_path / "second", "acme/signed", verify_here=True)
    new_folder = download(live_server, token, tmp_path / "new", revision=new_revision.commit)
    new_hint = json.loads((new_folder / SIGNATURE_PATH).read_text())["verificationMaterial"]["publicKey"]["hint"]
    assert new_hint != old_hint

    current = fetch_public_key(f"{live_server.url}/api/v1/signing-key.pem", tmp_path / "current.pem")
    retired = fetch_public_key(f"{live_server.url}/api/v1/signing-keys/{old_hint}.pem", tmp_path / "retired.pem")
    assert model_signing_verify(new_folder, current).returncode == 0
    assert model_signing_verify(old_folder, retired).returncode == 0
    assert model_signing_verify(old_folder, current).returncode != 0  # a key mismatch, not a silent pass

    status, _headers, body = http("GET", f"{live_server.url}/api/v1/signing-keys/")
    listed = {key["fingerprint"]: key for key in json.loads(body)}
    assert status == 200 and listed[old_hint]["retired_at"] and listed[new_hint]["retired_at"] is None


def test_an_unknown_key_fingerprint_is_a_clear_404(live_server):
    status, headers, _body = http("GET", f"{live_server.url}/api/v1/signing-keys/{'0' * 64}.pem")
    assert status == 404 and "no signing key has the fingerprint" in headers["X-Error-Message"]


def test_a_checkpoint_that_brings_its_own_model_sig_is_refused_and_nothing_is_stored(tmp_path):
    from verification.core.tiny_llama import write_tiny_llama

    checkpoint = write_tiny_llama(tmp_path / "checkpoint", shards=1)
    (checkpoint / SIGNATURE_PATH).write_text("{}")
    with pytest.raises(PublishError, match="the portal signs the release"):
        publish_checkpoint(checkpoint, "acme/brings-sig")
    from distribution.models import Revision

    assert not Revision.objects.filter(repo__name="brings-sig").exists()


def test_a_configured_key_that_is_not_p256_stops_the_portal_at_start(settings, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.core.management.base import SystemCheckError

    wrong_curve = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    settings.SIGNING_KEY = wrong_curve.decode()
    with pytest.raises(SystemCheckError, match="E003"):
        call_command("check")


def test_rotation_is_refused_when_the_key_comes_from_the_environment(settings):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.core.management.base import CommandError

    settings.SIGNING_KEY = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(CommandError, match="put the new key there"):
        call_command("rotate_signing_key")


def reverify_checks(revision) -> dict:
    call_command("reverify", revision.repo.repo_id, "--revision", revision.commit, stdout=io.StringIO())
    return {check.code: check for check in revision.runs.first().checks.filter(name="signature")}


def test_reverify_confirms_the_signature_of_an_untouched_release(released):
    revision, _checkpoint, _token = released
    checks = reverify_checks(revision)
    assert set(checks) == {"SignatureValid"}


def test_bytes_changed_together_with_their_recorded_sha256_are_caught_by_the_signature(released):
    from django.core.management.base import CommandError

    from distribution.models import Revision

    revision, _checkpoint, _token = released
    shard = revision.files.get(path="model-00001-of-00002.safetensors")
    stored = get_storage(revision.storage_backend).path(shard.storage_key)
    flip_one_bit(stored)
    # Someone with the database and the storage, but not the signing key, covers the change.
    type(shard).objects.filter(pk=shard.pk).update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest())
    with pytest.raises(CommandError, match="failed re-verification"):
        reverify_checks(revision)
    mismatch = revision.runs.first().checks.get(name="signature")
    assert mismatch.code == "SignatureMismatch" and shard.path in mismatch.message
    revision.refresh_from_db()
    assert revision.state == Revision.State.WITHDRAWN


def test_an_edited_signature_fails_reverification(released):
    from django.core.management.base import CommandError

    revision, _checkpoint, _token = released
    signature = revision.files.get(path=SIGNATURE_PATH)
    storage = get_storage(revision.storage_backend)
    bundle = json.loads(storage.open(signature.storage_key).read())
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = bundle["dsseEnvelope"]["signatures"][0]["sig"][::-1]
    edited = json.dumps(bundle).encode()
    storage.put_bytes(signature.storage_key, edited)
    type(signature).objects.filter(pk=signature.pk).update(sha256=hashlib.sha256(edited).hexdigest(), size=len(edited))
    with pytest.raises(CommandError, match="failed re-verification"):
        reverify_checks(revision)
    assert revision.runs.first().checks.get(name="signature").code == "SignatureInvalid"


def test_an_anonymous_request_for_the_key_never_makes_or_registers_one(live_server, settings, tmp_path):
    settings.SIGNING_KEY_GENERATED_PATH = tmp_path / "web-host" / "signing-key.pem"  # a web host's own var/
    status, headers, _body = http("GET", f"{live_server.url}/api/v1/signing-key.pem")
    assert status == 404 and "no release has been signed yet" in headers["X-Error-Message"]
    status, _headers, body = http("GET", f"{live_server.url}/api/v1/signing-keys/")
    assert status == 200 and json.loads(body) == []
    assert not settings.SIGNING_KEY_GENERATED_PATH.exists() and not SigningKey.objects.exists()


def test_the_key_a_worker_signed_with_is_served_and_stays_current(live_server, released, settings, tmp_path):
    signed_with = SigningKey.objects.get(retired_at__isnull=True)
    settings.SIGNING_KEY_GENERATED_PATH = tmp_path / "web-host" / "signing-key.pem"  # no key on this host
    served = fetch_public_key(f"{live_server.url}/api/v1/signing-key.pem", tmp_path / "served.pem")
    assert served.read_text() == signed_with.public_pem
    http("GET", f"{live_server.url}/api/v1/signing-keys/")
    assert list(SigningKey.objects.values_list("fingerprint", "retired_at")) == [(signed_with.fingerprint, None)]
    assert not settings.SIGNING_KEY_GENERATED_PATH.exists()
