"""Anchors: the audit chain's head (sequence, hash, time), signed with the release signing key and kept
outside the database, so that a person who can write to the database, even one who holds the chain's
key, cannot recompute the chain after an edit or cut its tail without the anchors saying so.

An anchor is a small JSON document: `payload` (the statement, as text, exactly as signed), `signature`
(base64 DER ECDSA P-256 over the payload's UTF-8 bytes, SHA-256) and `key` (the signing key's
fingerprint, as in /api/v1/signing-keys/). The payload is JSON, never the DSSE encoding a `model.sig`
signs, so a signature of one kind can never pass for the other. Which key signs and where documents
are stored is the caller's: this layer sees neither storage nor the key registry.
"""

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent

STATEMENT_TYPE = "weightgate-audit-anchor/v1"
PREFIX = "audit/anchors"
SIGNATURE = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


class BadAnchor(ValueError):
    """A document that is not an anchor this portal writes."""


@dataclass(frozen=True)
class Anchor:
    name: str
    sequence: int
    hash: str
    at: str
    key: str
    payload: str
    signature: bytes

    def signed_by(self, public_key: ec.EllipticCurvePublicKey) -> bool:
        try:
            public_key.verify(self.signature, self.payload.encode(), SIGNATURE)
        except InvalidSignature:
            return False
        return True

    def as_dict(self) -> dict:
        return {"name": self.name, "sequence": self.sequence, "hash": self.hash, "at": self.at, "key": self.key}


def name_for(sequence: int) -> str:
    # Zero-padded, so storage lists anchors in chain order.
    return f"{sequence:015d}.json"


def sequence_named(name: str) -> int | None:
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() else None


def signed_head(private_key: ec.EllipticCurvePrivateKey, fingerprint: str) -> tuple[str, bytes] | None:
    """(storage name, document) anchoring the chain's head now; None while the chain is empty."""
    head = AuditChainHead.objects.filter(sequence__gt=0).first()
    if head is None:
        return None
    statement = {
        "type": STATEMENT_TYPE,
        "sequence": head.sequence,
        "hash": head.last_hash,
        "at": timezone.now().isoformat(),
    }
    payload = json.dumps(statement, sort_keys=True)
    signature = private_key.sign(payload.encode(), SIGNATURE)
    document = {"payload": payload, "signature": base64.b64encode(signature).decode(), "key": fingerprint}
    return name_for(head.sequence), json.dumps(document, indent=1).encode()


def parsed(name: str, document: bytes) -> Anchor:
    """The anchor in `document`; BadAnchor when it is not one."""
    try:
        outer = json.loads(document)
        statement = json.loads(outer["payload"])
        if statement["type"] != STATEMENT_TYPE:
            raise BadAnchor(f"{name} is a {statement['type']!r} statement, not an audit anchor")
        datetime.fromisoformat(statement["at"])
        return Anchor(
            name=name,
            sequence=int(statement["sequence"]),
            hash=str(statement["hash"]),
            at=statement["at"],
            key=str(outer["key"]),
            payload=outer["payload"],
            signature=base64.b64decode(outer["signature"], validate=True),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise BadAnchor(f"{name} is not an audit anchor: {error}") from None


def anchor_breaks(documents: dict[str, bytes], public_keys: dict[str, ec.EllipticCurvePublicKey]) -> Iterator[str]:
    """Every disagreement between the chain in the database and the anchors in `documents` (name -> bytes),
    checked with the keys that have signed releases (`public_keys`, fingerprint -> key)."""
    anchors = []
    for name in sorted(documents):
        try:
            anchor = parsed(name, documents[name])
        except BadAnchor as error:
            yield str(error)
            continue
        key = public_keys.get(anchor.key)
        if key is None or not anchor.signed_by(key):
            yield f"anchor {name} is not signed by a key of this portal: it was forged or edited"
            continue
        anchors.append(anchor)
    if not anchors:
        return
    hashes_at = dict(
        AuditEvent.objects.filter(sequence__in=[anchor.sequence for anchor in anchors]).values_list("sequence", "hash")
    )
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    for anchor in anchors:
        if anchor.sequence > last:
            yield (
                f"the chain ends at event {last}, but event {anchor.sequence} was anchored at {anchor.at}: "
                f"events {last + 1} to {anchor.sequence} at least were cut"
            )
        elif hashes_at.get(anchor.sequence) != anchor.hash:
            yield (
                f"event {anchor.sequence} is not the one anchored at {anchor.at}: the chain up to it was "
                "rewritten and its hashes recomputed"
            )
