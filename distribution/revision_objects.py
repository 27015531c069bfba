"""Where the files of a revision are in storage now, with their size and version.

Most files lie under the revision's own prefix (`Revision.storage_prefix`). A Hub commit's uploaded and
carried files do not: their rows refer to the bytes where the repo already held them (`RevisionFile.
object_key`: an accepted upload, or the same file of an earlier revision) and record the version referred
to. Every reader that needs a revision's stored objects rather than one file's key (verification, the
served layout, the restore check, publishing's last look) asks here, so none lists the prefix alone.

A file once verified is found at the version verified, as links serve it (`storage.recorded_version`): in
a bucket that keeps versions, bytes written over its key since are neither read nor judged in its place.
"""

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distribution.models import Revision, RevisionFile
from distribution.storage import get_storage, recorded_version

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
    version_id: str = ""  # S3's VersionId of the version found, where a HEAD named it: reads name it too
    written_over: bool = False  # found at the version verified, which its key no longer holds as current

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

    def open(self, storage):
        """The bytes of the version found, never another's (storage raises ObjectChanged)."""
        return storage.open(self.key, etag=self.version, version=self.version_id)

    def read_range(self, storage, offset: int, length: int) -> bytes:
        return storage.read_range(self.key, offset, length, etag=self.version, version=self.version_id)


@dataclass
class InStorage:
    files: dict[str, StoredFile]  # the revision's files found in storage, and any other object under its prefix
    # Objects under the prefix at the path of a referenced file: not that file, and not read as it.
    strays: list[str] = field(default_factory=list)


def files_in_storage(revision: Revision, rows: Iterable[RevisionFile] | None = None) -> InStorage:
    """Every object under the revision's prefix, and the objects its rows (all of them when not given)
    refer to elsewhere, each verified file at the version verified; a file missing from storage is missing
    from `files`. StorageError when storage cannot be read."""
    storage = get_storage(revision.storage_backend)
    prefix = revision.storage_prefix
    listed = storage.stored_objects(prefix)
    files = {path: StoredFile(path, f"{prefix}/{path}", found.size, found.etag) for path, found in listed.items()}
    rows = list(revision.files.all() if rows is None else rows)
    strays = sorted(row.path for row in rows if row.object_key and files.pop(row.path, None) is not None)
    # Verified files are looked up one by one, so that each is found at its version and the version is named.
    looked_up = [row for row in rows if row.object_key or row.sha256]
    if looked_up:
        with ThreadPoolExecutor(min(LOOKUPS_AT_ONCE, len(looked_up))) as pool:
            found = list(pool.map(lambda row: stored_file(storage, row.path, row), looked_up))
        for row, held in zip(looked_up, found, strict=True):
            if held is not None:
                files[row.path] = held
    return InStorage(files, strays)


def is_verified(row: RevisionFile) -> bool:
    """A file verification recorded in object storage (its sha256, the ETag it arrived with): links serve the
    version verified, and so must every later read of it."""
    return bool(row.sha256 and row.stored_etag)


def stored_file(storage, path: str, row: RevisionFile | None, prefix: str = "") -> StoredFile | None:
    """One file, looked up by its key alone (one HEAD on S3, which names its VersionId): a verified file at
    the version verified while storage keeps it, else at whatever its key holds; None when absent."""
    key = row.storage_key if row is not None else f"{prefix}/{path}"
    committed = row.stored_etag if row is not None and row.object_key else None
    if row is not None and is_verified(row):
        held = recorded_version(storage, key, row.size, row.stored_etag, row.stored_version)
        if held is not None:
            return StoredFile(path, key, held.size, held.etag, committed, held.version, not held.latest)
    held = storage.stored_object(key)
    return None if held is None else StoredFile(path, key, held.size, held.etag, committed, held.version)


def file_in_storage(revision: Revision, path: str) -> StoredFile | None:
    """One file of the revision (or another object under its prefix) as storage holds it now; None when absent."""
    row = revision.files.filter(path=path).first()
    return stored_file(get_storage(revision.storage_backend), path, row, revision.storage_prefix)
