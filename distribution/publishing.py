"""Publishing: copy a checkpoint directory into storage and record it as a Revision to be verified.

A publish is a draft (`Revision.State.DRAFT`) until every file is in storage. The draft records the
files it expects (path, size) and a key made of the storage and of each file's path, size and
modification time. Run again on the same files, `publish_checkpoint` finds the draft by that key and
sends only what storage lacks. A directory whose files changed since is a new draft, and the draft
begun from that same directory (host and path) is discarded, its copies deleted: a draft never mixes
two versions of a checkpoint. Only when every file is there does the draft become `uploaded` and go
to verification, which never claims a draft; nothing lists or serves one.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.chain import record
from audit.tags import Tag
from distribution.models import LfsObject, Repo, Revision, RevisionFile, TracedRevision, parse_repo_id
from distribution.revision_objects import StoredFile, files_in_storage
from distribution.storage import ObjectChanged, StorageError, Transfer, Uploaded, get_storage
from verification.core.layout import INDEX_NAME
from verification.core.signature import SIGNATURE_PATH
from verification.outcomes import missing_or_failed_checks

log = logging.getLogger(__name__)
State = Revision.State


class PublishError(Exception):
    """The checkpoint cannot be published as given; the message says what to change.
    `details` holds what a machine reading the outcome needs (the draft, the files that differ)."""

    def __init__(self, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


@contextlib.contextmanager
def storage_errors(what: str):
    """Storage and file errors, as a PublishError that says what was being done."""
    try:
        yield
    except (OSError, StorageError) as error:
        raise PublishError(f"{what}: {error}") from None


# File names that travel unchanged through URLs, shell scripts and SHA256SUMS lines.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._+=@-]+(/[A-Za-z0-9._+=@-]+)*$")


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, POSIX
    absolute: Path
    size: int
    mtime_ns: int
    identity: tuple[int, int]  # (device, inode) when it was checked: the file read must be that one

    def open(self) -> BinaryIO:
        """The file checked, opened without following a link: one swapped in since, or another file now
        at its path, is refused, never read (the descriptor is what every read uses from then on)."""
        try:
            descriptor = os.open(self.absolute, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise self.replaced() if error.errno == errno.ELOOP else PublishError(f"{self.path}: {error}") from None
        status = os.fstat(descriptor)
        found = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if not stat.S_ISREG(status.st_mode) or found != (*self.identity, self.size, self.mtime_ns):
            os.close(descriptor)
            raise self.replaced()
        return os.fdopen(descriptor, "rb")

    def replaced(self) -> "PublishError":
        return PublishError(
            f"{self.path} was replaced after it was checked (a link or another file stands in its place): "
            "nothing of it was stored; publish again once the checkpoint stays put"
        )


def checked_source(directory: Path, path: Path) -> SourceFile | None:
    """The regular file at `path` (None for a folder), refusing links, special files and odd names."""
    relative = path.relative_to(directory).as_posix()
    status = path.lstat()
    if stat.S_ISLNK(status.st_mode):
        raise PublishError(f"{relative} is a symbolic link: copy the file itself into {directory}")
    if stat.S_ISDIR(status.st_mode):
        return None
    if not stat.S_ISREG(status.st_mode):
        raise PublishError(f"{relative} is not a regular file")
    if not SAFE_PATH.match(relative) or relative.startswith("-"):
        raise PublishError(
            f"{relative!r} has characters a download URL or script could misread; rename it using "
            "letters, digits and . _ - + = @"
        )
    if relative == SIGNATURE_PATH:
        raise PublishError(
            f"{relative} is where the portal puts its signature of each release: remove it from "
            f"{directory} (the portal signs the release once it is verified)"
        )
    return SourceFile(relative, path, status.st_size, status.st_mtime_ns, (status.st_dev, status.st_ino))


def checkpoint_files(directory: Path) -> list[SourceFile]:
    """Every file of the checkpoint, by path, refusing links and special files."""
    files = []
    for folder, subdirs, names in os.walk(directory, followlinks=False):
        for name in sorted(subdirs + names):
            if (source := checked_source(directory, Path(folder) / name)) is not None:
                files.append(source)
    return sorted(files, key=lambda source: source.path)


# --- The publisher's digests (SHA256SUMS) -------------------------------------------------------

SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](?:\./)?(.+)$")


def read_sha256sums(path: Path) -> dict[str, str]:
    """path -> sha256 from a `sha256sum` listing (digest, two spaces or a space and `*`, path)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PublishError(f"{path} cannot be read ({error}): give the SHA256SUMS file sha256sum wrote") from None
    digests = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = SUMS_LINE.match(line)
        if match is None:
            raise PublishError(
                f"{path}, line {number}, is not a sha256sum line (64 hex digits, two spaces, the path): {line[:80]!r}"
            )
        digest, listed = match.group(1).lower(), match.group(2)
        if digests.get(listed, digest) != digest:
            raise PublishError(f"{path} gives {listed} two different digests (lines up to {number})")
        digests[listed] = digest
    if not digests:
        raise PublishError(f"{path} lists no file: give the SHA256SUMS file sha256sum wrote for the checkpoint")
    return digests


def refuse_unlisted_or_missing(expected: dict[str, str], files: list[SourceFile], sums: Path) -> None:
    """Before anything is sent: the digests must name exactly the files of the checkpoint."""
    present = {source.path for source in files if source.absolute.resolve() != sums.resolve()}
    missing, unlisted = sorted(expected.keys() - present), sorted(present - expected.keys())
    if missing or unlisted:
        problems = [f"missing here: {path}" for path in missing] + [f"not in {sums.name}: {path}" for path in unlisted]
        raise PublishError(
            f"{sums} and the checkpoint name different files ({'; '.join(problems)}). Nothing was published: "
            f"publish the directory the digests were made for, or a {sums.name} that lists every file of it"
        )


# --- Drafts ---------------------------------------------------------------------------------------


def draft_key(storage_name: str, files: list[SourceFile]) -> str:
    """What a rerun must match to resume a draft: the same storage, paths, sizes and modification times."""
    lines = [storage_name, *(f"{source.path}\t{source.size}\t{source.mtime_ns}" for source in files)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def draft_source(directory: Path) -> str:
    return f"{socket.gethostname()}:{directory.resolve()}"


def claim_draft(draft: Revision) -> None:
    """Take the draft for this run, refusing while another run (its heartbeat fresh) publishes it."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.PUBLISH_STALE_SECONDS)
    free = Q(publish_heartbeat_at__isnull=True) | Q(publish_heartbeat_at__lt=stale)
    if not Revision.objects.filter(free, pk=draft.pk, state=State.DRAFT).update(publish_heartbeat_at=now):
        draft.refresh_from_db()
        raise PublishError(
            f"draft {draft.commit} of {draft.repo.repo_id} is being published by another run (last heard from "
            f"at {draft.publish_heartbeat_at:%H:%M:%S} UTC); wait for it to finish, or, if it was stopped, run "
            f"this again once it has been silent for {settings.PUBLISH_STALE_SECONDS} s"
        )


@contextlib.contextmanager
def held(draft: Revision):
    """Keep this run's claim on the draft alive while it publishes; free it when the run stops."""
    try:
        with draft.heartbeat("publish_heartbeat_at", while_state=State.DRAFT, every=settings.PUBLISH_STALE_SECONDS / 4):
            yield
    finally:
        Revision.objects.filter(pk=draft.pk, state=State.DRAFT).update(publish_heartbeat_at=None)


def discard_draft(draft: Revision, *, actor=None, reason: str) -> None:
    """Delete a draft that can no longer be finished: its copies, its unfinished uploads, its row."""
    claim_draft(draft)
    storage = get_storage(draft.storage_backend)
    with storage_errors(f"discarding draft {draft.commit} failed; run the publish again to retry"):
        storage.discard_unfinished(draft.storage_prefix)
        storage.delete_prefix(draft.storage_prefix)
    with transaction.atomic():
        record(Tag.DRAFT_DISCARDED, actor=actor, repo=draft.repo, commit=draft.commit, reason=reason)
        draft.delete()


def discard_abandoned_drafts() -> list[str]:
    """Discard every draft not finished within PUBLISH_DRAFT_DAYS of its start (and not being published
    now); return their commits. Run daily (distribution.tasks)."""
    cutoff = timezone.now() - timedelta(days=settings.PUBLISH_DRAFT_DAYS)
    discarded = []
    for draft in Revision.objects.filter(state=State.DRAFT, created_at__lt=cutoff).select_related("repo"):
        try:
            discard_draft(draft, reason=f"not finished within {settings.PUBLISH_DRAFT_DAYS} days of its start")
        except PublishError as error:  # a run is finishing it right now, or storage is away: next time
            log.warning("draft %s was not discarded: %s", draft, error)
            continue
        discarded.append(draft.commit)
    return discarded


def open_draft(storage, org: str, name: str, directory: Path, files: list[SourceFile], publisher):
    """(the draft for these files, whether an earlier publish began it), claimed for this run."""
    key, origin = draft_key(storage.name, files), draft_source(directory)
    draft = Revision.objects.filter(repo__org=org, repo__name=name, state=State.DRAFT, draft_key=key).first()
    if draft is not None:
        claim_draft(draft)
        record(Tag.DRAFT_RESUMED, actor=publisher, repo=draft.repo, commit=draft.commit, source=origin)
        return draft, True
    commit = secrets.token_hex(20)
    with storage_errors(f"{storage.name} storage cannot be reached, nothing was published"):
        storage.stored_objects(f"repos/{org}/{name}/{commit}")  # refuses bad credentials before anything is written
    changed = Revision.objects.filter(
        repo__org=org, repo__name=name, state=State.DRAFT, draft_source=origin, storage_backend=storage.name
    )
    for earlier in changed:
        discard_draft(earlier, actor=publisher, reason=f"the files in {directory} changed since it began")
    draft = Revision(
        commit=commit,
        state=State.DRAFT,
        storage_backend=storage.name,
        published_by=publisher,
        draft_key=key,
        draft_source=origin,
        publish_heartbeat_at=timezone.now(),
    )
    return start_draft(draft, org, name, files), False


@transaction.atomic
def start_draft(
    draft: Revision,
    org: str,
    name: str,
    files,
    *,
    digests: dict[str, str] | None = None,
    references: dict[str, tuple[str, str]] | None = None,
) -> Revision:
    """Record the draft and the files it expects (each with a path and a size; `digests` gives the sha256
    of those known on arrival, `references` the key and ETag of those whose bytes stay where the repo
    already holds them), in the repo (created if new)."""
    draft.repo, _ = Repo.objects.get_or_create(org=org, name=name)
    draft.save()
    known, referred = digests or {}, references or {}
    RevisionFile.objects.bulk_create(
        RevisionFile(
            revision=draft,
            path=file.path,
            size=file.size,
            upload_sha256=known.get(file.path, ""),
            object_key=referred.get(file.path, ("", ""))[0],
            stored_etag=referred.get(file.path, ("", ""))[1].strip('"'),
        )
        for file in files
    )
    record(
        Tag.DRAFT_STARTED,
        actor=draft.published_by,
        repo=draft.repo,
        commit=draft.commit,
        storage=draft.storage_backend,
        source=draft.draft_source,
        files=len(files),
        bytes=sum(file.size for file in files),
    )
    return draft


# --- Sending what storage lacks -------------------------------------------------------------------


@dataclass
class FileOutcome:
    path: str
    size: int
    # "uploaded" (sent now), "resumed" (an interrupted upload had stored part of it), "already there"
    status: str
    sent: int  # bytes sent by this run
    sha256: str = ""  # computed on the way when checking the publisher's digests


class Progress(Protocol):
    """What a publish tells as it goes: the command shows it as a bar or as lines."""

    def begin(self, draft: Revision, *, resumed: bool, files: int, total: int, there_files: int, there: int): ...

    def advance(self, count: int) -> None: ...  # bytes stored, from the upload threads

    def file_done(self, outcome: FileOutcome) -> None: ...

    def end(self) -> None: ...


class Silent:
    def begin(self, draft, **counts):
        pass

    def advance(self, count):
        pass

    def file_done(self, outcome):
        pass

    def end(self):
        pass


def is_there(row: RevisionFile, stored: StoredFile | None) -> bool:
    """A whole copy this draft stored itself, or the object it refers to: the size it expects, and the ETag
    it recorded on the way (the version referred to)."""
    return stored is not None and stored.size == row.size and stored.etag.strip('"') == row.stored_etag.strip('"')


def sha256_of(source: SourceFile) -> str:
    digest = hashlib.sha256()
    with source.open() as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def send_file(storage, prefix: str, source: SourceFile, transfer: Transfer, hashing: bool):
    """(the upload, its sha256 or "") of one file, refusing a file that changed while it was read."""
    digest = hashlib.sha256() if hashing else None
    with source.open() as handle:
        uploaded = storage.upload(f"{prefix}/{source.path}", handle, source.size, transfer, digest=digest)
        now = os.fstat(handle.fileno())
    if (now.st_size, now.st_mtime_ns) != (source.size, source.mtime_ns):
        raise PublishError(
            f"{source.path} changed while it was being published: publish once the checkpoint is written "
            "(a rerun starts a new draft for the new files)"
        )
    return uploaded, digest.hexdigest() if digest else ""


def outcome_of(row: RevisionFile, uploaded: Uploaded | None, sha256: str) -> FileOutcome:
    if uploaded is None:
        return FileOutcome(row.path, row.size, "already there", 0, sha256)
    status = "resumed" if uploaded.resumed else "uploaded"
    return FileOutcome(row.path, row.size, status, row.size - uploaded.resumed, sha256)


def finish_all(futures: dict[Future, object], on_result) -> None:
    """Hand each result to `on_result` as it comes; on a failure start nothing new, let what runs finish
    (so its copy is recorded and not sent again), then raise the first failure."""
    failure = None
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.cancelled():
                    continue
                if future.exception() is None:
                    on_result(futures[future], future.result())
                elif failure is None:
                    failure = future.exception()
                    for waiting in pending:
                        waiting.cancel()
    except BaseException:
        for waiting in pending:
            waiting.cancel()
        raise
    if failure is not None:
        raise failure


def stored_already(draft: Revision, storage, rows: dict[str, RevisionFile]) -> set[str]:
    """The paths of the draft's files that an earlier run stored whole."""
    with storage_errors(f"{storage.name} storage cannot be reached; draft {draft.commit} is unchanged, run again"):
        stored = files_in_storage(draft, rows.values()).files
    return {path for path, row in rows.items() if is_there(row, stored.get(path))}


def store_missing(draft: Revision, storage, files: list[SourceFile], *, hashing: bool, progress, concurrency: int):
    """Send every file storage lacks, several at once; record each copy as it completes."""
    rows = {row.path: row for row in draft.files.all()}
    there = stored_already(draft, storage, rows)
    progress.begin(
        draft,
        resumed=bool(there),
        files=len(rows),
        total=sum(row.size for row in rows.values()),
        there_files=len(there),
        there=sum(rows[path].size for path in there),
    )
    outcomes = {}

    def recorded(source: SourceFile, result) -> None:
        uploaded, sha256 = result
        row = rows[source.path]
        if uploaded is not None:
            row.stored_etag = uploaded.etag.strip('"')
        row.upload_sha256 = sha256 or row.upload_sha256
        RevisionFile.objects.filter(pk=row.pk).update(stored_etag=row.stored_etag, upload_sha256=row.upload_sha256)
        outcomes[source.path] = outcome_of(row, uploaded, row.upload_sha256)
        progress.file_done(outcomes[source.path])

    with Transfer(concurrency, progress.advance) as transfer, ThreadPoolExecutor(concurrency) as files_pool:
        futures = {}
        for source in files:
            row = rows[source.path]
            if source.path not in there:
                futures[files_pool.submit(send_file, storage, draft.storage_prefix, source, transfer, hashing)] = source
            elif hashing and not row.upload_sha256:  # stored by a run that did not hash: read it, don't send it
                futures[files_pool.submit(lambda checked: (None, sha256_of(checked)), source)] = source
            else:
                outcomes[source.path] = outcome_of(row, None, row.upload_sha256)
        try:
            finish_all(futures, recorded)
        except (OSError, StorageError) as error:
            raise PublishError(stopped_message(draft, storage, error, stored=len(outcomes), files=len(rows))) from None
        except BaseException:
            transfer.stopping.set()  # an interrupt: the uploads under way stop after their current part
            raise
        finally:
            progress.end()
    return [outcomes[path] for path in sorted(outcomes)]


def stopped_message(draft: Revision, storage, error, *, stored: int, files: int) -> str:
    return (
        f"copying into {storage.name} storage stopped ({error}). Draft {draft.commit} of {draft.repo.repo_id} "
        f"keeps the {stored} of {files} files stored so far and is never verified or served as it is: "
        "run the same command again to send the rest"
    )


def refuse_differing(draft: Revision, expected: dict[str, str], outcomes: list[FileOutcome], sums: Path) -> None:
    """After the upload: every file's sha256 must be the one the training cluster wrote."""
    differing = [
        {"path": outcome.path, "sha256": outcome.sha256, "expected": expected[outcome.path]}
        for outcome in outcomes
        if outcome.path in expected and outcome.sha256 != expected[outcome.path]
    ]
    if differing:
        named = "; ".join(
            f"{item['path']} is {item['sha256']}, {sums.name} says {item['expected']}" for item in differing
        )
        raise PublishError(
            f"{len(differing)} file(s) differ from {sums}: {named}. Draft {draft.commit} of {draft.repo.repo_id} "
            "keeps its copies and stays a draft, never verified or served. If the checkpoint here is damaged, "
            "copy it again from the training cluster and publish it (changed files start a new draft and discard "
            f"this one); if {sums.name} was the wrong file, run again with the right one (nothing is sent again)",
            details={"revision": draft.commit, "state": State.DRAFT, "differing": differing},
        )


def complete(draft: Revision, storage, publisher, *, request=None, supersede: bool = False, **details) -> None:
    """Every file is there: the draft becomes an uploaded revision, to be queued for verification, or an
    incomplete one when its checkpoint names files it lacks (an index's shards a later commit brings).
    With `supersede` (Hub commits), an uploaded revision ends the verification of the repo's older ones
    still waiting or running: only the newest commit is worth verifying."""
    rows = list(draft.files.all())
    assembling = still_assembling(rows)
    present = [row for row in rows if row.path not in assembling]
    with storage_errors(f"checking draft {draft.commit} in {storage.name} storage failed; run again to finish it"):
        storage.discard_unfinished(draft.storage_prefix)
        stored = files_in_storage(draft, present).files
    absent = [row.path for row in present if not is_there(row, stored.get(row.path))]
    if absent:
        raise PublishError(
            f"{', '.join(absent)} vanished from {storage.name} storage (or changed) while draft {draft.commit} "
            "was published: run the same command again to send them"
        )
    lacking = [] if assembling else files_lacking(storage, stored, {row.path for row in rows})
    state = State.ASSEMBLING if assembling else State.INCOMPLETE if lacking else State.UPLOADED
    waiting = ""
    if assembling:
        waiting = f"waiting for {', '.join(sorted(assembling))} to be rebuilt from their Xet upload by a worker"
    elif lacking:
        waiting = f"waiting for {', '.join(lacking)}, which its index names: commit them to finish it"
    # A draft is dated when it is published; an assembling revision keeps its commit's date (and order).
    dated = {"created_at": timezone.now()} if draft.state == State.DRAFT else {}
    with transaction.atomic():
        older = (
            locked_older(draft, dated.get("created_at", draft.created_at))
            if supersede and state == State.UPLOADED
            else []
        )
        if draft.move(state, publish_heartbeat_at=None, failure_reason=waiting, **dated):
            record(
                Tag.REVISION_PUBLISHED,
                actor=publisher,
                repo=draft.repo,
                commit=draft.commit,
                request=request,
                storage=storage.name,
                state=state,
                files=len(rows),
                bytes=sum(row.size for row in rows),
                **({"lacking": lacking} if lacking else {}),
                **details,
            )
            fail_superseded(older, draft, publisher)


def still_assembling(rows: list[RevisionFile]) -> set[str]:
    """The paths of `rows` whose bytes a worker is still rebuilding from a Xet upload (distribution.xet); a
    row made while its upload was assembling takes the version it was accepted as."""
    unversioned = {row.object_key for row in rows if row.object_key and not row.stored_etag}
    if not unversioned:
        return set()
    uploads = {obj.key: obj for obj in LfsObject.objects.filter(key__in=unversioned)}
    assembling = set()
    for row in rows:
        upload = uploads.get(row.object_key) if not row.stored_etag else None
        if upload is not None and upload.state == LfsObject.State.ASSEMBLING:
            assembling.add(row.path)
        elif upload is not None and upload.etag:
            row.stored_etag = upload.etag
            row.save(update_fields=["stored_etag"])
    return assembling


def files_lacking(storage, stored: dict[str, StoredFile], paths: set[str]) -> list[str]:
    """The shards the checkpoint's index names that the revision does not hold (an index that cannot be
    read names none: verification reports it)."""
    index = stored.get(INDEX_NAME) if INDEX_NAME in paths else None
    if index is None:
        return []
    try:
        with storage.open(index.key, etag=index.version) as handle:
            weight_map = json.loads(handle.read(16 * 1024 * 1024))["weight_map"]
        named = {str(shard) for shard in weight_map.values()}
    except (OSError, StorageError, ObjectChanged, ValueError, KeyError, TypeError, AttributeError):
        return []
    return sorted(named - paths)


def locked_older(newer: Revision, created_at) -> list[Revision]:
    """The repo's revisions older than `newer` still waiting for verification or under way, their rows locked.
    Taken before anything in the transaction takes the audit chain's head: a worker storing its verdict
    holds its revision's row and then wants the head, so the other order deadlocks with it."""
    older = Revision.objects.select_for_update().filter(
        repo=newer.repo, state__in=(State.UPLOADED, State.VERIFYING), created_at__lte=created_at
    )
    return list(older.exclude(pk=newer.pk).order_by("pk"))


def fail_superseded(older: list[Revision], newer: Revision, publisher) -> None:
    """Fail the verification of `older` (locked by `locked_older`): their workers find them failed at their
    next claim and store nothing more."""
    for revision in older:
        revision.move(
            State.FAILED,
            actor=publisher,
            failure_reason=f"superseded by the newer commit {newer.commit} before its verification finished",
            verification_stage=Revision.Stage.NONE,
            verification_heartbeat_at=None,
        )


def publish_draft(draft: Revision, storage, publisher, store, **completing):
    """The one way a draft becomes a revision, for the operator's `publish_checkpoint` and a Hub commit
    alike: held by this run while `store()` puts its files into storage, then completed (`complete`).
    Returns what `store()` returned."""
    with held(draft):
        stored = store()
        complete(draft, storage, publisher, **completing)
    return stored


# --- The whole publish ----------------------------------------------------------------------------


@dataclass
class Publication:
    revision: Revision
    files: list[FileOutcome]
    resumed: bool  # an earlier, interrupted publish of the same files was continued

    def as_dict(self) -> dict:
        sent = [outcome for outcome in self.files if outcome.status != "already there"]
        total = sum(outcome.size for outcome in self.files)
        return {
            "repo": self.revision.repo.repo_id,
            "revision": self.revision.commit,
            "state": self.revision.state,
            "storage": self.revision.storage_backend,
            "resumed": self.resumed,
            "bytes": total,
            "uploaded": {"files": len(sent), "bytes": sum(outcome.sent for outcome in sent)},
            "already_there": {
                "files": len(self.files) - len(sent),
                "bytes": total - sum(outcome.sent for outcome in sent),
            },
            "files": [asdict(outcome) for outcome in self.files],
        }

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def checked_request(directory, repo_id: str, storage_backend: str | None):
    """(directory, org, name, its files, the storage) or a PublishError; nothing is written."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PublishError(f"{directory} is not a directory: give the folder that holds the checkpoint")
    try:
        org, name = parse_repo_id(repo_id)
    except ValidationError as error:
        raise PublishError(error.messages[0]) from None
    files = checkpoint_files(directory)
    if not files:
        raise PublishError(f"{directory} holds no files")
    try:
        storage = get_storage(storage_backend)
    except (StorageError, ValueError) as error:
        raise PublishError(str(error)) from None
    return directory, org, name, files, storage


def publish_checkpoint(
    directory,
    repo_id: str,
    *,
    publisher=None,
    storage_backend: str | None = None,
    expect_sha256: Path | None = None,
    progress: Progress | None = None,
    concurrency: int | None = None,
    traceable: bool = False,
) -> Publication:
    """Copy every file of `directory` into storage and record it as a revision waiting for verification
    (the caller queues it: `verification.tasks.verify_revision`).

    Creates the repo when it does not exist (gated, manual approval). The revision is a draft until
    every file is stored; a rerun on the same files resumes it. With `expect_sha256` (a SHA256SUMS
    file) every file is hashed as it is sent, in the same read, and the draft is not completed
    unless each digest is the one listed. With `traceable` the repo is marked traceable (never unmarked
    here): its revisions verified from then on are served as a marked copy per recipient.
    """
    directory, org, name, files, storage = checked_request(directory, repo_id, storage_backend)
    expected = read_sha256sums(expect_sha256) if expect_sha256 else None
    if expected is not None:
        refuse_unlisted_or_missing(expected, files, Path(expect_sha256))
    draft, resumed = open_draft(storage, org, name, directory, files, publisher)

    def store() -> list[FileOutcome]:
        outcomes = store_missing(
            draft,
            storage,
            files,
            hashing=expected is not None,
            progress=progress or Silent(),
            concurrency=concurrency or settings.PUBLISH_CONCURRENCY,
        )
        if expected is not None:
            refuse_differing(draft, expected, outcomes, Path(expect_sha256))
        if traceable and not draft.repo.traceable:
            Repo.objects.filter(pk=draft.repo.pk).update(traceable=True)
            draft.repo.traceable = True
        return outcomes

    outcomes = publish_draft(draft, storage, publisher, store)
    return Publication(draft, outcomes, resumed)


def has_served_layout(revision: Revision) -> bool:
    return TracedRevision.objects.filter(revision=revision).exists()


@contextlib.contextmanager
def tag_unique(revision: Revision, tag: str):
    """A tag another revision of the repo took meanwhile (a release racing this one, after both checked it
    was free) refuses this one, saying so; nothing of it was written."""
    try:
        yield
    except IntegrityError:
        if not tag:
            raise
        raise PublishError(
            f"the tag {tag!r} was just given to another revision of {revision.repo.repo_id}: choose another "
            "tag and release again"
        ) from None


def release_revision(revision: Revision, *, actor=None, tag: str = "", request=None) -> Revision:
    """Release a verified revision whose every required check ran and passed; `tag` names it for clients.
    `request`: the page's, whose address and agent the audit event records."""
    if revision.state == Revision.State.RELEASED:
        if tag and revision.tag != tag:
            with tag_unique(revision, tag), transaction.atomic():
                Revision.objects.filter(pk=revision.pk).update(tag=tag)
            record(
                Tag.REVISION_TAGGED,
                actor=actor,
                repo=revision.repo,
                request=request,
                commit=revision.commit,
                revision_tag=tag,
            )
            revision.tag = tag
        return revision
    problems = missing_or_failed_checks(revision) if revision.state == Revision.State.VERIFIED else []
    if problems:
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} cannot be released: {', '.join(problems)}; "
            f"run `manage.py reverify {revision.repo.repo_id} --revision {revision.commit[:12]}`"
        )
    if revision.state == Revision.State.VERIFIED and revision.repo.traceable and not has_served_layout(revision):
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} has no verified served layout, so no "
            "traceable copy of it can be issued: it was verified before the repo became traceable; run "
            f"`manage.py prepare_traceable {revision.repo.repo_id} --revision {revision.commit[:12]}` on a worker "
            "host, or unmark the repo in the admin to release it untraced"
        )
    named = {"tag": tag} if tag else {}
    if revision.state == Revision.State.DRAFT:
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} is a draft: its files are still being "
            "published; run publish_checkpoint again on the same directory to finish it, then wait for verification"
        )
    with tag_unique(revision, tag):
        moved = revision.move(
            Revision.State.RELEASED, actor=actor, request=request, released_at=timezone.now(), **named
        )
    if not moved:
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} is {revision.state}, not verified: "
            "only a verified revision can be released"
            + (f" ({revision.failure_reason})" if revision.failure_reason else "")
        )
    return revision


def withdraw_revision(revision: Revision, *, reason: str, actor=None, request=None) -> Revision:
    """Stop every download of a released revision: the Hub API, links and tickets the portal issued
    (each request checks the state again), and, in every web process, the fast path's remembered
    decisions (within DOWNLOAD_DECISION_SECONDS; at once in this process)."""
    reason = reason.strip()
    if not reason:
        raise PublishError("give a reason: it is recorded and shown to staff")
    withdrawn = revision.move(
        Revision.State.WITHDRAWN, actor=actor, request=request, withdrawn_at=timezone.now(), failure_reason=reason
    )
    if not withdrawn:
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} is {revision.state}: only a released revision "
            "is withdrawn (one that is not released serves nothing)"
        )
    return revision
