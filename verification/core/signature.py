"""Releases signed in the OpenSSF model-signing format (v1.0), so anyone can check a copy with
`model_signing verify key --signature DIR/model.sig --public_key signing-key.pem DIR`.

The signature is a Sigstore bundle whose DSSE envelope holds an in-toto statement listing every
file's sha256. Those digests are the ones verification already computed: signing reads no weights.
This is the format alone; which key signs is verification.signing's (the Django side).
"""

import base64
import hashlib
import json
from pathlib import PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_PATH = "model.sig"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# What model-signing leaves out of a model directory by default, plus the Hugging Face client's
# metadata folder in a `local_dir` download: none of them can be part of the signed release.
IGNORED_PATHS = (".git", ".gitattributes", ".github", ".gitignore", ".cache", SIGNATURE_PATH)


def is_signed_path(path: str) -> bool:
    return PurePosixPath(path).parts[0] not in IGNORED_PATHS


def public_pem(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(pem: bytes) -> str:
    """sha256 of the public key's PEM, as model-signing writes it into the bundle's key hint."""
    return hashlib.sha256(pem).hexdigest()


def pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature covers."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def statement(model_name: str, digests: dict[str, str]) -> dict:
    """The in-toto statement for files -> sha256 hex, with model-signing's root digest as its subject."""
    names = sorted(digests)
    root = hashlib.sha256(b"".join(bytes.fromhex(digests[name]) for name in names)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(IGNORED_PATHS),
            },
            "resources": [{"name": name, "algorithm": "sha256", "digest": digests[name]} for name in names],
        },
    }


def sign_digests(model_name: str, digests: dict[str, str], private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A model-signing bundle (JSON bytes) over `digests`, signed with `private_key`."""
    payload = json.dumps(statement(model_name, digests), indent=2).encode()
    # Deterministic (RFC 6979): a retried signature gives the same bytes, so its recorded sha256 holds.
    signature = private_key.sign(pae(payload), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": fingerprint(public_pem(private_key))}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2).encode()


def read_signature(bundle: bytes, public_key_pem: bytes) -> dict[str, str]:
    """The file -> sha256 a bundle signs, after checking it with `public_key_pem`; ValueError if it does not hold."""
    try:
        parsed = json.loads(bundle)
        envelope = parsed["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        hint = parsed["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ValueError(f"not a model-signing bundle: {error}") from error
    public_key = serialization.load_pem_public_key(public_key_pem)
    if hint != fingerprint(public_key_pem):
        raise ValueError(f"signed by key {hint[:16]}…, not by {fingerprint(public_key_pem)[:16]}…")
    try:
        public_key.verify(signature, pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("the signature does not match its content") from None
    content = json.loads(payload)
    if content.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"predicate type {content.get('predicateType')!r}, expected {PREDICATE_TYPE}")
    return {item["name"]: item["digest"] for item in content["predicate"]["resources"]}
