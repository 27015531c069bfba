"""Where the files of a revision are in storage now, with their size and version.

Most files lie under the revision's own prefix (`Revision.storage_prefix`). A Hub commit's uploaded and
carried files do not: their rows refer to the bytes where the repo already held them (`RevisionFile.
object_key`: an accepted upload, or the same file of an earlier revision) and record the version referred
to. Every reader that needs a revision's stored objects rather than one file's key (verification, the
served layout, the restore check, publishing's last look) asks here, so none lists the prefix alone.
"""

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distribution.models import Revision, RevisionFile
from distribution.storage import get_storage

# Referenced objects are looked up one request each (a HEAD on S3): this many at once.
LOOKUPS_AT_ONCE = 8


@dataclass(frozen=True)
class StoredFile:
    """One file as storage holds it now."""

    path: str
    key: str
    size: int
    etag: str = ""  # S3's ETag of the object now; local files have none
    # A referenced file's version, as its row recorded it; None for a file under the revision's prefix.
    committed_etag: str | None = None

    @property
    def referenced(self) -> bool:
        return self.committed_etag is not None

    @property
    def replaced(self) -> bool:
        """A referenced object that storage now holds in another version than the one referred to."""
        return bool(self.committed_etag) and self.committed_etag.strip('"') != self.etag.strip('"')

    @property
    def version(self) -> str:
        """The ETag a read must find (storage refuses another): a referenced file's recorded one, so no
        other bytes are ever read in its place; the one listed now for a file under the prefix."""
        return self.committed_etag or self.etag


@dataclass
class InStorage:
    files: dict[str, StoredFile]  # the revision's files found in storage, and any other object under its prefix
    # Objects under the prefix at the path of a referenced file: not that file, and not read as it.
    strays: list[str] = field(default_factory=list)


def files_in_storage(revision: Revision, rows: Iterable[RevisionFile] | None = None) -> InStorage:
    """Every object under the revision's prefix, and the objects its rows (all of them when not given)
    refer to elsewhere; a file missing from storage is missing from `files`. StorageError when storage
    cannot be read."""
    storage = get_storage(revision.storage_backend)
    prefix = revision.storage_prefix
    listed = storage.stored_objects(prefix)
    files = {path: StoredFile(path, f"{prefix}/{path}", found.size, found.etag) for path, found in listed.items()}
    referenced = [row for row in (revision.files.all() if rows is None else rows) if row.object_key]
    strays = sorted(row.path for row in referenced if files.pop(row.path, None) is not None)
    if referenced:
        with ThreadPoolExecutor(min(LOOKUPS_AT_ONCE, len(referenced))) as pool:
            found = list(pool.map(lambda row: storage.stored_object(row.object_key), referenced))
        for row, held in zip(referenced, found, strict=True):
            if held is not None:
                files[row.path] = StoredFile(row.path, row.object_key, held.size, held.etag, row.stored_etag)
    return InStorage(files, strays)


def file_in_storage(revision: Revision, path: str) -> StoredFile | None:
    """One file of the revision (or another object under its prefix) as storage holds it now; None when absent."""
    row = revision.files.filter(path=path).first()
    in_storage = files_in_storage(revision, [row] if row is not None else [])
    return in_storage.files.get(path)
