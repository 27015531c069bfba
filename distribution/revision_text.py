"""A small text file of a revision (a model card, a config), read from storage once per file digest and
kept in the cache: a revision's bytes never change, and pages and listings ask for the same few files."""

from django.core.cache import cache

from distribution.models import Revision
from distribution.storage import StorageError, get_storage

MOST_BYTES = 512 * 1024  # larger than this, it is not read: no card header or config is that large


def revision_text(revision: Revision, path: str, most_bytes: int = MOST_BYTES, *, made=None, kind: str = "text"):
    """The file at `path` as text (its first `most_bytes`, undecodable bytes replaced), or what `made` makes
    of that text, cached under `kind`; None when the revision has no such file or it cannot be read now."""
    stored = revision.files.filter(path=path).first()
    if stored is None:
        return None
    key = f"weightgate:revision-{kind}:{revision.commit}:{path}:{stored.sha256 or stored.size}:{most_bytes}"
    value = cache.get(key)
    if value is None:
        try:
            with get_storage(revision.storage_backend).open(stored.storage_key) as handle:
                text = handle.read(most_bytes).decode("utf-8", errors="replace")
        except (StorageError, OSError):
            return None
        value = made(text) if made else text
        cache.set(key, value, timeout=None)
    return value
