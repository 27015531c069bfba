"""The audit chain's anchors in this deployment: a worker signs the head with the release signing key,
the checkpoint storage keeps the statements (outside the database), and the registry of signing keys
checks them. The format and the checks are audit.anchors'."""

from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from audit import anchors
from distribution.storage import StorageError, get_storage
from verification.models import SigningKey
from verification.signing import current_key


def anchor_head() -> str | None:
    """Sign the chain's head and store the statement; its name, or None when there is nothing new to anchor."""
    private_key, key = current_key()
    signed = anchors.signed_head(private_key, key.fingerprint)
    if signed is None:
        return None
    name, document = signed
    storage = get_storage()
    if name in storage.stored_objects(anchors.PREFIX):
        return None  # the head has not moved since the last anchor
    storage.put_bytes(f"{anchors.PREFIX}/{name}", document)
    return name


def stored_documents(after: int = 0) -> dict[str, bytes]:
    """The anchors in storage (name -> document) of events after sequence `after`, in chain order."""
    storage = get_storage()
    names = sorted(name for name in storage.stored_objects(anchors.PREFIX) if name > anchors.name_for(after))
    documents = {}
    for name in names:
        with storage.open(f"{anchors.PREFIX}/{name}") as handle:
            documents[name] = handle.read()
    return documents


def public_keys() -> dict:
    return {
        key.fingerprint: serialization.load_pem_public_key(key.public_pem.encode()) for key in SigningKey.objects.all()
    }


def copies_breaks(directory: Path) -> Iterator[str]:
    """The chain checked against anchors an auditor kept (files named as the anchors endpoint names them)."""
    copies = {f"{directory.name}/{path.name}": path.read_bytes() for path in sorted(directory.glob("*.json"))}
    yield from anchors.anchor_breaks(copies, public_keys())


def stored_anchor_breaks() -> Iterator[str]:
    """The chain checked against the anchors in storage; one line if storage cannot be read."""
    try:
        documents = stored_documents()
    except (StorageError, OSError) as error:
        yield f"the anchors in storage cannot be read, so the chain's tail is unchecked: {error}"
        return
    yield from anchors.anchor_breaks(documents, public_keys())
