"""Where checkpoint files live: one interface (`Storage`), two backends.

Publishing and verification use only the interface. Downloads differ by backend, and ask which one
holds a file in one way, `isinstance(storage, LocalStorage)` (distribution.downloads.channels):
local files are sent by the portal or its front server (`LocalStorage.path`), S3 objects never pass
through Django: the client is redirected to a short-lived link (`S3Storage.presigned_get`).

Uploads are made to be resumed: an object appears under its key only once it is whole (a local
file is renamed into place, an S3 object is one PutObject or a completed multipart upload), and a
multipart upload cut off halfway is continued from the parts S3 already holds, each checked
against the local bytes (its ETag is their MD5); one of no use is aborted.
"""

import collections
import contextlib
import fcntl
import functools
import hashlib
import io
import os
import queue
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class ObjectChanged(Exception):
    """An object was replaced between the listing that named its version and a read of it."""


class StorageError(Exception):
    """The storage could not be reached or refused an operation; worth retrying later."""


def checked_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{key!r} is not a storage key")
    return key


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str = ""  # S3's ETag; local files have none
    version: str = ""  # S3's VersionId in a versioned bucket; "" where there is none
    latest: bool = True  # False for an earlier version, kept by a versioned bucket after the key was written over

    def is_recorded(self, size: int, etag: str) -> bool:
        """Whether this is the object recorded as `size` bytes of ETag `etag` (an S3 object replaced or
        rewritten gets another ETag; local files have none, so their size alone is compared)."""
        return self.size == size and (not etag or not self.etag or self.etag.strip('"') == etag.strip('"'))


def still_held(storage, key: str, size: int, etag: str) -> bool | None:
    """Whether `key` still holds the object recorded, as its current version; None when storage cannot say now."""
    try:
        found = storage.stored_object(key)
    except (OSError, StorageError):
        return None
    return found is not None and found.is_recorded(size, etag)


def recorded_version(storage, key: str, size: int, etag: str, version: str = "") -> StoredObject | None:
    """The version of `key` that is the object recorded: `version` (the S3 VersionId verification read) while
    the bucket keeps it, whatever was written over the key since; else the current version if it has the
    recorded size and ETag, or, in a versioned bucket, the newest earlier one that has (a bucket restored by
    copying gives every object a new VersionId, and rows verified before versions were recorded have none).
    None when storage holds no such version. Raises StorageError (or OSError) when storage cannot say now."""
    current = storage.stored_object(key)
    if version:
        if current is not None and current.version == version:
            return current
        kept = storage.stored_object(key, version=version)
        if kept is not None and kept.is_recorded(size, etag):
            return replace(kept, latest=False)
    if current is not None and current.is_recorded(size, etag):
        return current
    if not etag or not isinstance(storage, S3Storage):
        return None
    return next((older for older in storage.stored_versions(key) if older.is_recorded(size, etag)), None)


@dataclass(frozen=True)
class Uploaded:
    etag: str
    resumed: int = 0  # bytes an interrupted upload had already stored, not sent again


class Transfer:
    """What the uploads of one publish share: the threads that send parts, and a bound on the parts
    (or small files) in flight, each held in memory when it is hashed on the way. `on_bytes` hears of
    every byte stored, resumed parts included."""

    def __init__(self, concurrency: int, on_bytes: Callable[[int], None] = lambda count: None):
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload-part")
        self.slots = threading.BoundedSemaphore(concurrency)
        self.on_bytes = on_bytes
        self.stopping = threading.Event()  # set when the publish is interrupted: read no further part

    def __enter__(self) -> "Transfer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Storage(Protocol):
    """What publishing and verification need of a place that holds checkpoint files, by key."""

    name: str  # recorded on each revision, which keeps its files where they were published

    def upload(self, key: str, source: BinaryIO, size: int, transfer: Transfer, *, digest=None) -> Uploaded:
        """Store the `size` bytes of the open file `source` under `key`, resuming what an interrupted upload
        left; read from that descriptor only, never by path again. `digest` (a hashlib object), when
        given, is fed every byte of the file in order."""
        ...

    def put_file(self, key: str, source: Path | str) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        """Store `data` under `key`; the object stored (with its ETag and VersionId on S3)."""
        ...

    def open(self, key: str, *, etag: str = "", version: str = "") -> BinaryIO:
        """The object's bytes as a stream; with `etag`, only that version of it (else ObjectChanged); with
        `version` (an S3 VersionId), that version whatever the key holds now."""
        ...

    def read_range(self, key: str, offset: int, length: int, *, etag: str = "", version: str = "") -> bytes:
        """`length` bytes of the object from `offset`; with `etag`, of that version only (else ObjectChanged)."""
        ...

    def stored_objects(self, prefix: str) -> dict[str, StoredObject]:
        """relative path -> size and ETag of every whole file stored under `prefix`."""
        ...

    def stored_object(self, key: str, *, version: str = "") -> StoredObject | None:
        """The size, ETag and version of the whole file at `key` (with `version`, of that version); None when
        there is none."""
        ...

    def discard_unfinished(self, prefix: str) -> int:
        """Remove what interrupted uploads left under `prefix` (never a whole file); return how many."""
        ...

    def sealed(self, key: str) -> contextlib.AbstractContextManager:
        """The object at `key` held against the portal's own writes into it while it is judged and moved."""
        ...

    def delete_prefix(self, prefix: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def digest(self, key: str, *, etag: str = "", size: int | None = None) -> "Digest":
        """The sha256, size and first bytes of the object at `key`, in one read (`size`, when known, lets
        object storage read it in several ranges at once)."""
        ...

    def probe(self) -> None:
        """Raise StorageError, quickly, when files cannot be read from here now (the readiness probe)."""
        ...


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int
    head: bytes  # the first HEAD_BYTES, by which a file's kind is judged


HEAD_BYTES = 512  # as much as the Hub client samples of each file it announces


class Digesting:
    """The Digest of bytes fed to it as they go by (an upload's `digest=` takes one)."""

    def __init__(self):
        self.sha256, self.size, self.head = hashlib.sha256(), 0, b""

    def update(self, data) -> None:
        self.sha256.update(data)
        self.size += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(data[: HEAD_BYTES - len(self.head)])

    def result(self) -> Digest:
        return Digest(self.sha256.hexdigest(), self.size, self.head)


def digest_of(chunks) -> Digest:
    """Hash the byte strings `chunks` yields, read by a side thread a few chunks ahead, so the reading
    (a socket, a disk) and the hashing (which releases the GIL) overlap."""
    digesting = Digesting()
    for chunk in ahead(chunks, 4):
        digesting.update(chunk)
    return digesting.result()


def ahead(items, depth: int):
    """The items of the iterable `items`, made by a side thread up to `depth` before they are asked for (for
    reads that wait on a socket or a disk); with `depth` 0, by the consumer's thread as it asks. An error
    making one is raised here in its turn; a consumer that stops early stops the side thread at its next item."""
    if depth == 0:
        yield from items
        return
    pending: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()
    done = object()

    def offer(entry) -> bool:
        """Queue `entry` unless the consumer has stopped (then False)."""
        while not stopped.is_set():
            with contextlib.suppress(queue.Full):
                pending.put(entry, timeout=0.1)
                return True
        return False

    def make() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as error:  # handed to the consumer, which raises it
            offer((done, error))

    maker = threading.Thread(target=make, name="read-ahead", daemon=True)
    maker.start()
    try:
        while True:
            item, error = pending.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stopped.set()


class DigestingAside(Digesting):
    """A Digesting that hashes in a side thread (hashlib releases the GIL on large buffers), so the thread
    that feeds it goes on making the next bytes meanwhile. Fed bytes must not change after; `result` waits
    for the last of them. A context manager: leaving it stops the side thread."""

    def __init__(self, depth: int = 2):
        super().__init__()
        self.pending: queue.Queue = queue.Queue(maxsize=depth)
        self.hasher = threading.Thread(target=self._hash, name="digest-aside", daemon=True)
        self.hasher.start()

    def _hash(self) -> None:
        while (data := self.pending.get()) is not None:
            super().update(data)

    def update(self, data) -> None:
        self.pending.put(data)

    def result(self) -> Digest:
        self.close()
        return super().result()

    def close(self) -> None:
        if self.hasher.is_alive():
            self.pending.put(None)
            self.hasher.join()

    def __enter__(self) -> "DigestingAside":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_chunks(stream: BinaryIO, chunk: int):
    with contextlib.closing(stream):
        while data := stream.read(chunk):
            yield data


COPY_CHUNK = 8 * 1024 * 1024
# An object hashed from S3 is read in ranges this long, this many at once (at most 5 ranges held: 40 MiB).
DIGEST_RANGE_BYTES = 8 * 1024 * 1024
DIGEST_READERS = 4
PARTIAL_SUFFIX = ".partial"  # a local file being written; renamed into place once whole


def fed(data, digest) -> bytes:
    if digest is not None:
        digest.update(data)
    return data


class LocalStorage:
    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / checked_key(key)

    @contextlib.contextmanager
    def _writing(self, key: str):
        """A file to write `key` into, renamed into place only once it is whole."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        with partial.open("wb") as out:
            yield out
        partial.replace(target)

    def upload(self, key: str, source: BinaryIO, size: int, transfer: Transfer, *, digest=None) -> Uploaded:
        with self._writing(key) as out:
            while chunk := source.read(COPY_CHUNK):
                out.write(fed(chunk, digest))
                transfer.on_bytes(len(chunk))
        return Uploaded("")

    def put_file(self, key: str, source: Path | str) -> None:
        with self._writing(key) as out, Path(source).open("rb") as handle:
            shutil.copyfileobj(handle, out, COPY_CHUNK)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        with self._writing(key) as out:
            out.write(data)
        return StoredObject(len(data))

    def open(self, key: str, *, etag: str = "", version: str = "") -> BinaryIO:
        # A local file has no versions to tell apart: it is only ever renamed into place, never rewritten.
        return self.path(key).open("rb")

    def read_range(self, key: str, offset: int, length: int, *, etag: str = "", version: str = "") -> bytes:
        with self.open(key) as handle:
            handle.seek(offset)
            return handle.read(length)

    def _files(self, prefix: str):
        root = self.path(prefix)
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path

    def stored_objects(self, prefix: str) -> dict[str, StoredObject]:
        return {
            relative: StoredObject(path.stat().st_size)
            for relative, path in self._files(prefix)
            if not relative.endswith(PARTIAL_SUFFIX)
        }

    def stored_object(self, key: str, *, version: str = "") -> StoredObject | None:
        path = self.path(key)
        return StoredObject(path.stat().st_size) if path.is_file() and not path.is_symlink() else None

    def discard_unfinished(self, prefix: str) -> int:
        partials = [path for relative, path in self._files(prefix) if relative.endswith(PARTIAL_SUFFIX)]
        for path in partials:
            path.unlink(missing_ok=True)
        return len(partials)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def digest(self, key: str, *, etag: str = "", size: int | None = None) -> Digest:
        return digest_of(read_chunks(self.open(key), COPY_CHUNK))

    def stage(self, key: str) -> None:
        """An empty file at `key` for `write_at` to fill: made when an upload is announced, so that a write
        arriving after the upload was judged and moved on finds nothing to write into, not a new file."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))

    def write_at(self, key: str, offset: int, source: BinaryIO, length: int) -> str:
        """Write `length` bytes of `source` at `offset` of the file `stage` made at `key` (never renamed
        into place here); the MD5 of those bytes, as S3 tags a part. ObjectChanged, with nothing written,
        when that file is gone (judged and moved or deleted), or was sealed (`sealed`) while they came."""
        target = self.path(key)
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            descriptor = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectChanged(f"{key} is no longer staged; nothing was written") from None
        try:
            written = 0
            while written < length and (chunk := source.read(min(COPY_CHUNK, length - written))):
                # The body arrives at the sender's pace, unlocked; each write is shared-locked and lands only
                # while the file is still at `key`: a file sealed and moved on is never written into.
                fcntl.flock(descriptor, fcntl.LOCK_SH)
                try:
                    if not is_at(target, descriptor):
                        raise ObjectChanged(f"{key} was sealed while these bytes were sent; none were written")
                    os.pwrite(descriptor, chunk, offset + written)
                finally:
                    fcntl.flock(descriptor, fcntl.LOCK_UN)
                md5.update(chunk)
                written += len(chunk)
        finally:
            os.close(descriptor)
        if written != length:
            raise StorageError(f"{key}: {written} of the {length} bytes announced arrived")
        return md5.hexdigest()

    @contextlib.contextmanager
    def sealed(self, key: str):
        """The file at `key` held against `write_at` while it is judged and moved or deleted: a write under
        way finishes first, and any later one finds the file gone from `key` and writes nothing."""
        try:
            descriptor = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # which releases the lock

    def rename(self, source: str, target: str) -> None:
        destination = self.path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.path(source).replace(destination)

    def probe(self) -> None:
        # Made when missing, as the first publish would; web hosts may mount it read-only.
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"LOCAL_STORAGE_ROOT cannot be created: {error.strerror}") from error
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorageError("LOCAL_STORAGE_ROOT is not readable by this process")


def is_at(path: Path, descriptor: int) -> bool:
    """Whether the open file `descriptor` is still the file at `path` (not moved away, deleted or replaced)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino)


class S3Storage:
    name = "s3"

    def __init__(
        self,
        *,
        endpoint_url,
        bucket,
        access_key_id,
        secret_access_key,
        region,
        addressing_style,
        multipart_threshold,
        concurrency=8,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket

        def client(**config):
            return boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key or None,
                region_name=region,
                config=Config(signature_version="s3v4", s3={"addressing_style": addressing_style}, **config),
            )

        self.client = client(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max(10, concurrency),  # one connection per part in flight
        )
        self._client = client
        # Files at least this large go up in parts of this size (larger when 10,000 would not hold them).
        self.part_size = multipart_threshold
        self.concurrency = concurrency

    def _call(self, operation, *args, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return operation(*args, **kwargs)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise ObjectChanged(f"S3 bucket {self.bucket}: the object changed since it was listed") from error
            raise StorageError(f"S3 bucket {self.bucket}: {error}") from error
        except (Boto3Error, BotoCoreError) as error:
            raise StorageError(f"S3 bucket {self.bucket}: {error}") from error

    def upload(self, key: str, source: BinaryIO, size: int, transfer: Transfer, *, digest=None) -> Uploaded:
        if size < self.part_size:
            with transfer.slots:
                data = fed(source.read(), digest)
                etag = self._call(self.client.put_object, Bucket=self.bucket, Key=checked_key(key), Body=data)["ETag"]
            transfer.on_bytes(size)
            return Uploaded(etag)
        return MultipartUpload(self, checked_key(key), source, size).send(transfer, digest)

    def put_file(self, key: str, source: Path | str) -> None:
        with Transfer(self.concurrency) as transfer, Path(source).open("rb") as handle:
            self.upload(key, handle, os.fstat(handle.fileno()).st_size, transfer)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        answer = self._call(self.client.put_object, Bucket=self.bucket, Key=checked_key(key), Body=data)
        return StoredObject(len(data), answer["ETag"], s3_version(answer))

    def open(self, key: str, *, etag: str = "", version: str = "") -> BinaryIO:
        """The object's bytes as a stream; with `etag`, only that version of it (else ObjectChanged)."""
        selected = one_version(etag=etag, version=version)
        answer = self._call(self.client.get_object, Bucket=self.bucket, Key=checked_key(key), **selected)
        return answer["Body"]

    def read_range(self, key: str, offset: int, length: int, *, etag: str = "", version: str = "") -> bytes:
        answer = self._call(
            self.client.get_object,
            Bucket=self.bucket,
            Key=checked_key(key),
            Range=f"bytes={offset}-{offset + length - 1}",
            **one_version(etag=etag, version=version),
        )
        with contextlib.closing(answer["Body"]) as body:
            return body.read()

    def stream_range(self, key: str, start: int, end: int, chunk: int = 1024 * 1024, *, etag: str = ""):
        """Bytes [start, end) of the object, in pieces as they arrive (a served copy's shared prefix); with
        `etag`, of that version only (else ObjectChanged, before the first piece)."""
        if start >= end:
            return
        answer = self._call(
            self.client.get_object,
            Bucket=self.bucket,
            Key=checked_key(key),
            Range=f"bytes={start}-{end - 1}",
            **one_version(etag=etag),
        )
        with contextlib.closing(answer["Body"]) as body:
            while piece := body.read(chunk):
                yield piece

    def _objects(self, prefix: str):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=checked_key(prefix) + "/"))):
            yield from page.get("Contents", [])

    def stored_objects(self, prefix: str) -> dict[str, StoredObject]:
        start = len(checked_key(prefix)) + 1
        return {item["Key"][start:]: StoredObject(item["Size"], item["ETag"]) for item in self._objects(prefix)}

    def unfinished_uploads(self, prefix: str) -> list[dict]:
        """The multipart uploads begun under `prefix` and neither completed nor aborted, oldest first."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=checked_key(prefix))))
        return sorted((upload for page in pages for upload in page.get("Uploads", [])), key=lambda u: u["Initiated"])

    def abort(self, upload: dict) -> None:
        self._call(
            self.client.abort_multipart_upload, Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )

    def discard_unfinished(self, prefix: str) -> int:
        uploads = self.unfinished_uploads(checked_key(prefix) + "/")
        for upload in uploads:
            self.abort(upload)
        return len(uploads)

    def delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": item["Key"]} for item in self._objects(prefix)]
        for start in range(0, len(keys), 1000):  # the most one DeleteObjects call takes
            batch = keys[start : start + 1000]
            self._call(self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=checked_key(key))

    def digest(self, key: str, *, etag: str = "", size: int | None = None) -> Digest:
        if not etag or size is None or size <= DIGEST_RANGE_BYTES:
            return digest_of(read_chunks(self.open(key, etag=etag), COPY_CHUNK))
        digesting = Digesting()
        for piece in self.ranges_ahead(key, size, etag):
            digesting.update(piece)
        return digesting.result()

    def ranges_ahead(self, key: str, size: int, etag: str):
        """The object's version `etag` in DIGEST_RANGE_BYTES pieces, in order, DIGEST_READERS read at once:
        one GET stream from S3 is slower than hashing (bench/results/publish_hub.md)."""
        with ThreadPoolExecutor(DIGEST_READERS, thread_name_prefix="digest-range") as pool:
            pending: collections.deque = collections.deque()
            for offset in range(0, size, DIGEST_RANGE_BYTES):
                length = min(DIGEST_RANGE_BYTES, size - offset)
                pending.append(pool.submit(self.read_range, key, offset, length, etag=etag))
                if len(pending) > DIGEST_READERS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def stored_object(self, key: str, *, version: str = "") -> StoredObject | None:
        try:
            head = self._call(
                self.client.head_object, Bucket=self.bucket, Key=checked_key(key), **one_version(version=version)
            )
        except StorageError as error:
            answer = getattr(error.__cause__, "response", {})
            code = answer.get("Error", {}).get("Code")
            # A version asked for may be unknown here (400: not even of this store's form; 405: a delete marker).
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion") or (version and code in ("400", "405")):
                return None
            raise
        return StoredObject(head["ContentLength"], head["ETag"], s3_version(head))

    def stored_versions(self, key: str) -> list[StoredObject]:
        """Every version S3 keeps of the object at `key`, newest first; one, unnamed, in an unversioned bucket."""
        paginator = self.client.get_paginator("list_object_versions")
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=checked_key(key))))
        # The listing is by prefix: keys that merely begin with this one are other objects.
        found = [item for page in pages for item in page.get("Versions", []) if item["Key"] == key]
        found.sort(key=lambda item: (not item["IsLatest"], -item["LastModified"].timestamp()))
        return [StoredObject(item["Size"], item["ETag"], s3_version(item), item["IsLatest"]) for item in found]

    @contextlib.contextmanager
    def sealed(self, key: str):
        # The portal never writes into an S3 object: parts go to the bucket, and S3 assembles them once.
        yield

    def presigned_put(self, key: str, *, expires_in: int) -> str:
        return self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": checked_key(key)}, ExpiresIn=expires_in
        )

    def start_parts(self, key: str) -> str:
        """Open a multipart upload whose parts the client sends straight to S3; its upload id."""
        return self._call(self.client.create_multipart_upload, Bucket=self.bucket, Key=checked_key(key))["UploadId"]

    def presigned_part(self, key: str, upload_id: str, number: int, *, expires_in: int) -> str:
        params = {"Bucket": self.bucket, "Key": checked_key(key), "UploadId": upload_id, "PartNumber": number}
        return self.client.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_in)

    def complete_parts(self, key: str, upload_id: str, etags: list[str]) -> str:
        """Assemble the parts the client sent (part N has etags[N-1]); the whole object's ETag."""
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, start=1)]
        done = self._call(
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=checked_key(key),
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        return done["ETag"]

    @functools.cached_property
    def probe_client(self):
        """Asks once and briefly: an endpoint that is down must show as down at once, not after retries."""
        return self._client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2)

    def probe(self) -> None:
        self._call(self.probe_client.head_bucket, Bucket=self.bucket)

    def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", or "" where it was never turned on."""
        return self._call(self.probe_client.get_bucket_versioning, Bucket=self.bucket).get("Status", "")

    def presigned_get(self, key: str, *, filename: str, expires_in: int, version: str = "") -> str:
        """A link that fetches the object at `key`; with `version`, that version only, whatever is written
        over the key while the link lives (S3 signs the versionId with the rest)."""
        safe_name = filename.replace('"', "")
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": checked_key(key),
                "ResponseContentDisposition": f'attachment; filename="{safe_name}"',
                **one_version(version=version),
            },
            ExpiresIn=expires_in,
        )


def one_version(*, etag: str = "", version: str = "") -> dict:
    """The parameters that hold an S3 request to one version of an object: its ETag (If-Match: another is
    refused, 412, ObjectChanged) and its VersionId; none for whatever the key holds."""
    return {**({"IfMatch": etag} if etag else {}), **({"VersionId": version} if version else {})}


def s3_version(answer: dict) -> str:
    """The VersionId S3 gave an object; "" for none, or for "null", the one version of an unversioned bucket
    (a link naming it would be refused where the bucket never had versioning)."""
    version = answer.get("VersionId") or ""
    return "" if version == "null" else version


MAX_PARTS = 10_000  # the most parts S3 takes in one object


def part_size_for(size: int, smallest: int) -> int:
    """`smallest`, or the next MiB multiple that fits `size` in MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)
    return max(smallest, -(-needed // (1024 * 1024)) * 1024 * 1024)


class PartWindow(io.RawIOBase):
    """Bytes [offset, offset + length) of an open file, read with pread: the parts of one descriptor can
    be read by several threads at once, and a part sent again is read again from its start."""

    def __init__(self, descriptor: int, offset: int, length: int):
        super().__init__()
        self.descriptor, self.offset, self.length, self.position = descriptor, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self.length - self.position if size is None or size < 0 else min(size, self.length - self.position)
        data = os.pread(self.descriptor, max(0, wanted), self.offset + self.position) if wanted > 0 else b""
        self.position += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, min(self.length, base + position))
        return self.position

    def tell(self) -> int:
        return self.position

    def __len__(self) -> int:
        return self.length


class MultipartUpload:
    """One file sent in parts, several at once, each read once (in order when `digest` must see every byte).

    A multipart upload an earlier publish left for the same key is continued: a part S3 already holds
    with the right size and the MD5 of the local bytes as its ETag is not sent again; one whose bytes
    differ is sent again, replacing it. An upload with parts of another size (the part size changed)
    is aborted and the file starts over.
    """

    def __init__(self, storage: S3Storage, key: str, source: BinaryIO, size: int):
        self.storage, self.key, self.source, self.size = storage, key, source, size
        self.part_size = part_size_for(size, storage.part_size)
        self.failed = threading.Event()
        try:
            self.descriptor = source.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self.descriptor = None  # a stream (bytes made as they are sent): its parts are read in order

    def part_length(self, number: int) -> int:
        return min(self.part_size, self.size - (number - 1) * self.part_size)

    def resumable(self) -> tuple[str, dict[int, str]]:
        """(upload id, part number -> ETag of the parts already held), aborting uploads of no use."""
        storage = self.storage
        earlier = [u for u in storage.unfinished_uploads(self.key) if u["Key"] == self.key]
        for stale in earlier[:-1]:
            storage.abort(stale)
        if earlier:
            upload = earlier[-1]
            paginator = storage.client.get_paginator("list_parts")
            pages = storage._call(
                lambda: list(paginator.paginate(Bucket=storage.bucket, Key=self.key, UploadId=upload["UploadId"]))
            )
            parts = {part["PartNumber"]: part for page in pages for part in page.get("Parts", [])}
            if all(part["Size"] == self.part_length(number) for number, part in parts.items()):
                return upload["UploadId"], {number: part["ETag"].strip('"') for number, part in parts.items()}
            storage.abort(upload)
        created = storage._call(storage.client.create_multipart_upload, Bucket=storage.bucket, Key=self.key)
        return created["UploadId"], {}

    def send(self, transfer: Transfer, digest) -> Uploaded:
        upload_id, held = self.resumable()
        pending: dict[int, object] = {}
        resumed = 0
        count = -(-self.size // self.part_size)
        for number in range(1, count + 1):
            if self.failed.is_set() or transfer.stopping.is_set():
                break
            transfer.slots.acquire()
            try:
                body = self.part_body(number, digest, held)
            except BaseException:
                transfer.slots.release()
                raise
            if body is None:
                transfer.slots.release()
                pending[number] = held[number]
                resumed += self.part_length(number)
                transfer.on_bytes(self.part_length(number))
                continue
            pending[number] = transfer.pool.submit(self.send_part, upload_id, number, body, transfer)
        etags = {number: sent if isinstance(sent, str) else sent.result() for number, sent in pending.items()}
        if len(etags) < count:  # never complete a multipart upload that lacks a part: the object would be cut short
            raise StorageError(f"the upload of {self.key} stopped after {len(etags)} of its {count} parts")
        parts = [{"PartNumber": number, "ETag": f'"{etag}"'} for number, etag in etags.items()]
        return Uploaded(self.complete(upload_id, parts), resumed)

    def part_body(self, number: int, digest, held: dict[int, str]):
        """What to send as part `number`; None when S3 holds it already, with these bytes. Without a digest
        to feed, a part S3 lacks is read by the thread that sends it (as boto3 does), never copied first."""
        offset, length = (number - 1) * self.part_size, self.part_length(number)
        if self.descriptor is None:
            data = fed(read_exactly(self.source, length), digest)
        else:
            window = PartWindow(self.descriptor, offset, length)
            if digest is None and number not in held:
                return window
            data = fed(window.read(), digest)
        if number in held and held[number] == hashlib.md5(data, usedforsecurity=False).hexdigest():
            return None
        return data

    def send_part(self, upload_id: str, number: int, body, transfer: Transfer) -> str:
        storage, length = self.storage, len(body)
        try:
            etag = storage._call(
                storage.client.upload_part,
                Bucket=storage.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )["ETag"]
        except BaseException:
            self.failed.set()  # the reader stops: the parts sent so far stay for a resumed publish
            raise
        finally:
            transfer.slots.release()
            if hasattr(body, "close"):
                body.close()
        transfer.on_bytes(length)
        return etag.strip('"')

    def complete(self, upload_id: str, parts: list[dict]) -> str:
        storage = self.storage
        done = storage._call(
            storage.client.complete_multipart_upload,
            Bucket=storage.bucket,
            Key=self.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        return done["ETag"]


def read_exactly(source: BinaryIO, length: int) -> bytes:
    """The next `length` bytes of a stream; StorageError when it ends before them."""
    pieces, wanted = [], length
    while wanted and (piece := source.read(wanted)):
        pieces.append(piece)
        wanted -= len(piece)
    if wanted:
        raise StorageError(f"the bytes to store ended {wanted} bytes short of the {length} announced")
    return b"".join(pieces)


def s3_configured() -> bool:
    return bool(settings.S3_BUCKET)


@functools.cache
def get_storage(name: str | None = None) -> "LocalStorage | S3Storage":
    name = name or settings.STORAGE_BACKEND
    if name == "local":
        return LocalStorage(settings.LOCAL_STORAGE_ROOT)
    if name == "s3":
        if not s3_configured():
            raise StorageError("S3 storage is not configured: set S3_BUCKET, S3_ENDPOINT_URL and the S3 keys")
        return S3Storage(
            endpoint_url=settings.S3_ENDPOINT_URL,
            bucket=settings.S3_BUCKET,
            access_key_id=settings.S3_ACCESS_KEY_ID,
            secret_access_key=settings.S3_SECRET_ACCESS_KEY,
            region=settings.S3_REGION,
            addressing_style=settings.S3_ADDRESSING_STYLE,
            multipart_threshold=settings.S3_MULTIPART_THRESHOLD,
            concurrency=settings.PUBLISH_CONCURRENCY,
        )
    raise ValueError(f"unknown storage backend {name!r}: use 'local' or 's3'")


@receiver(setting_changed)
def _forget_storages(setting, **kwargs):
    if setting.startswith(("S3_", "LOCAL_STORAGE", "STORAGE_", "PUBLISH_")):
        get_storage.cache_clear()
