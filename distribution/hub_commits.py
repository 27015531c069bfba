"""Publishing with the Hugging Face client: the repo it creates, what preupload answers for each file,
and the commit, which is a new revision of the repo through the same draft as `publish_checkpoint`.

A commit's files are those of the repo's newest revision (its head: any state but draft, so a commit
builds on one still incomplete, assembling or being verified) with the commit's operations applied: files added
inline or by an uploaded LFS object, files and folders deleted. Only the files sent inline are stored
under the new revision's own prefix; every other file's row refers to the bytes where the repo already
holds them (RevisionFile.object_key: the accepted upload, or the same file of the head revision, both
immutable from then on), at the version recorded then. A commit reads and writes no byte of them again.
"""

import base64
import binascii
import hashlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from access.gate import is_staff, permit_create_repo
from access.services import assign_publisher
from audit.chain import record
from audit.tags import Tag
from distribution import lfs
from distribution.models import LfsObject, Repo, Revision, RevisionFile, parse_repo_id
from distribution.publishing import (
    SAFE_PATH,
    PublishError,
    complete,
    discard_draft,
    publish_draft,
    start_draft,
    still_assembling,
    storage_errors,
)
from distribution.storage import HEAD_BYTES, StorageError, get_storage
from hub.errors import Refusal
from verification.core.kinds import refused_kind
from verification.core.signature import SIGNATURE_PATH

# Sent by name: the web tier never imports the verification tasks, which lead to torch.
VERIFY_TASK = "verification.tasks.verify_revision"
# Files sent inline in the commit (base64) rather than by LFS: small text, as the Hub keeps in git.
REGULAR_MAX_BYTES = 1024 * 1024
# The most a commit's NDJSON may hold: its inline files are small, everything else is a reference.
COMMIT_MAX_BYTES = 64 * 1024 * 1024


class CommitRefused(Refusal):
    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message, status)
        self.code = code


# --- Creating a repo --------------------------------------------------------------------------------


def create_repo(user, token, org: str, name: str, *, private: bool, request=None) -> tuple[Repo, bool]:
    """(the repo, whether it is new); the creator becomes its publisher. AccessDenied when they may not."""
    try:
        parse_repo_id(f"{org}/{name}")
    except Exception as error:
        raise CommitRefused(str(getattr(error, "messages", [error])[0])) from None
    permit_create_repo(user, org, token)
    with transaction.atomic():
        repo, created = Repo.objects.get_or_create(org=org, name=name, defaults={"private": private})
        if created:
            record(Tag.REPO_CREATED, actor=user, repo=repo, request=request, private=private, via="hub")
            if not is_staff(user, token):
                assign_publisher(user, repo, via="create_repo", actor=user, request=request)
    return repo, created


# --- Preupload --------------------------------------------------------------------------------------


def path_problem(path: str, head: bytes, repo: Repo) -> str | None:
    """Why a repo may not take a file at `path` starting with `head`; None when it may."""
    if not isinstance(path, str) or not SAFE_PATH.match(path) or path.startswith("-"):
        return f"{path!r} has characters a download URL or script could misread: use letters, digits and . _ - + = @"
    if path == SIGNATURE_PATH:
        return f"{path} is where the portal puts its signature of each release: leave it out"
    refused = refused_kind(path, head, allow_code=repo.allows_code)
    return refused[1] if refused else None


def upload_modes(repo: Repo, files: list) -> list[dict]:
    """Per file: LFS for weights and anything large or binary, inline for small text; the sha256 the head
    revision holds under that path (the client leaves out a file that did not change). CommitRefused,
    naming every refused file, when any is refused: nothing of them is uploaded."""
    head = head_revision(repo)
    # After a failed verification the same folder sent again is a new attempt, not "nothing changed".
    held = {row.path: row for row in head.files.all()} if head and head.state != Revision.State.FAILED else {}
    answers, problems = [], []
    for item in files:
        path = item.get("path") if isinstance(item, dict) else None
        try:
            sample = base64.b64decode(item.get("sample", ""), validate=True)
            size = int(item.get("size", 0))
        except (binascii.Error, TypeError, ValueError):
            raise CommitRefused(f"the sample or size of {path!r} cannot be read") from None
        problem = path_problem(path, sample, repo)
        if problem:
            problems.append(problem)
            continue
        regular = size <= REGULAR_MAX_BYTES and not path.endswith(".safetensors") and b"\x00" not in sample
        answer = {"path": path, "uploadMode": "regular" if regular else "lfs", "shouldIgnore": False}
        row = held.get(path)
        oid = None if row is None else git_blob_oid(row) if regular else row.sha256 or row.upload_sha256
        if oid:
            answer["oid"] = oid
        answers.append(answer)
    if problems:
        raise CommitRefused(f"{repo.repo_id} cannot take these files: " + " | ".join(problems))
    return answers


def git_blob_oid(row: RevisionFile) -> str | None:
    """The git object id of a small file the head holds, as the client computes it for a file it sends
    inline (sha1 of `blob SIZE`, a NUL and the bytes), so an unchanged one is left out of the commit;
    None for a file too large to be sent inline or that cannot be read now."""
    if row.size > REGULAR_MAX_BYTES:
        return None
    try:
        with get_storage(row.revision.storage_backend).open(row.storage_key) as handle:
            data = handle.read(REGULAR_MAX_BYTES + 1)
    except (StorageError, OSError):
        return None  # the client then sends the file again: a commit too many, nothing lost
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# --- The commit -------------------------------------------------------------------------------------


def head_revision(repo: Repo) -> Revision | None:
    """The revision a commit builds on: the repo's newest that is not a draft, nor failed before its
    verification began (a file of it was refused as it was rebuilt from its Xet upload: it never held all
    its bytes, and a commit carrying its files would never complete)."""
    never_whole = Q(state=Revision.State.FAILED, verification_started_at__isnull=True)
    return (
        repo.revisions.exclude(state=Revision.State.DRAFT).exclude(never_whole).order_by("-created_at", "-id").first()
    )


@dataclass
class Entry:
    """One file of the new revision: its bytes inline, or where the repo holds them already."""

    path: str
    size: int
    sha256: str
    content: bytes | None = None
    source: lfs.Source | None = None


def parse_commit(body: bytes) -> tuple[dict, list[tuple[str, dict]]]:
    """The header and the operations of the Hub's NDJSON commit."""
    if len(body) > COMMIT_MAX_BYTES:
        raise CommitRefused(f"a commit holds at most {COMMIT_MAX_BYTES} bytes; send large files by LFS", 413)
    header, operations = None, []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError):
            raise CommitRefused(f"line {number} of the commit is not a JSON {{key, value}} object") from None
        if key == "header":
            header = value if isinstance(value, dict) else {}
        elif key in ("file", "lfsFile", "deletedFile", "deletedFolder") and isinstance(value, dict):
            operations.append((key, value))
        else:
            raise CommitRefused(f"line {number}: {key!r} is not an operation this portal takes (copies are not)")
    if header is None:
        raise CommitRefused("the commit has no header line")
    return header, operations


def apply(files: dict[str, Entry], operations, repo: Repo, storage) -> dict[str, Entry]:
    files = dict(files)
    for key, value in operations:
        path = value.get("path")
        if key == "deletedFile":
            if files.pop(path, None) is None:
                raise CommitRefused(f"A file with this name doesn't exist: {path}", 404, "EntryNotFound")
        elif key == "deletedFolder":
            prefix = str(path).rstrip("/") + "/"
            inside = [name for name in files if name.startswith(prefix)]
            if not inside:
                raise CommitRefused(f"A folder with this name doesn't exist: {path}", 404, "EntryNotFound")
            for name in inside:
                del files[name]
        elif key == "file":
            try:
                content = base64.b64decode(value.get("content", ""), validate=True)
            except (binascii.Error, TypeError):
                raise CommitRefused(f"the content of {path!r} is not base64") from None
            refuse_path(path, content[:HEAD_BYTES], repo)
            files[path] = Entry(path, len(content), hashlib.sha256(content).hexdigest(), content=content)
        else:
            files[path] = lfs_entry(path, value, repo, storage)
    return files


def lfs_entry(path, value: dict, repo: Repo, storage) -> Entry:
    oid = value.get("oid")
    source = lfs.committable_source(repo, oid, storage) if isinstance(oid, str) else None
    if source is None:
        raise CommitRefused(
            f"{path}: no accepted upload of {str(oid)[:64]} in {repo.repo_id} (it was never uploaded, or its "
            "bytes were not the oid): upload it again"
        )
    if value.get("size") not in (None, source.size):
        raise CommitRefused(f"{path}: {oid} has {source.size} bytes, not {value.get('size')}")
    refuse_path(path, source.head, repo)
    return Entry(path, source.size, oid, source=source)


def refuse_path(path, head: bytes, repo: Repo) -> None:
    problem = path_problem(path, head, repo)
    if problem:
        raise CommitRefused(problem)


def carried(head: Revision | None) -> dict[str, Entry]:
    """The head revision's files, as the new one starts with them (not its signature: each release gets its own)."""
    if head is None:
        return {}
    return {
        row.path: Entry(
            row.path,
            row.size,
            row.sha256 or row.upload_sha256,
            source=lfs.Source(row.storage_key, row.size, row.stored_etag),
        )
        for row in head.files.exclude(path=SIGNATURE_PATH)
    }


def place(draft: Revision, storage, entries: list[Entry]) -> None:
    """Put the files sent inline under the draft's prefix, several at once, recording what storage tagged
    each with; the others stay where they are (their rows, made with the draft, refer to them)."""
    inline = [entry for entry in entries if entry.content is not None]

    def put(entry: Entry) -> str:
        return storage.put_bytes(f"{draft.storage_prefix}/{entry.path}", entry.content).etag

    failed = f"storing the files of commit {draft.commit} failed; commit again"
    with storage_errors(failed), ThreadPoolExecutor(settings.PUBLISH_CONCURRENCY) as pool:
        etags = list(pool.map(put, inline))
    rows = {row.path: row for row in draft.files.filter(path__in=[entry.path for entry in inline])}
    for entry, etag in zip(inline, etags, strict=True):
        rows[entry.path].stored_etag = etag.strip('"')
    RevisionFile.objects.bulk_update(rows.values(), ["stored_etag"])


def assembled(obj: LfsObject) -> None:
    """A file sent by Xet was rebuilt and accepted: the revisions that name it refer to its version from now
    on, and each assembling one is completed (oldest first) once none of its files is still being rebuilt;
    verification is queued for those that become uploaded."""
    RevisionFile.objects.filter(object_key=obj.key, stored_etag="").update(stored_etag=obj.etag)
    waiting = Revision.objects.filter(state=Revision.State.ASSEMBLING, files__object_key=obj.key).distinct()
    for revision in waiting.order_by("created_at", "id"):
        complete_assembled(revision)
        if revision.state == Revision.State.UPLOADED:
            transaction.on_commit(lambda pk=revision.pk: current_app.send_task(VERIFY_TASK, args=[pk]))


def complete_assembled(revision: Revision) -> None:
    """Complete an assembling revision once no file it names is still being rebuilt (else it goes on
    waiting); failed, with why, when one of them is gone (refused), or as superseded when a newer commit of
    the repo stands (only the newest commit is worth verifying). The caller queues verification."""
    newer = (
        Revision.objects.filter(repo_id=revision.repo_id, created_at__gt=revision.created_at)
        .exclude(state__in=(Revision.State.DRAFT, Revision.State.FAILED))
        .order_by("created_at")
        .first()
    )
    if newer is not None:
        reason = f"superseded by the newer commit {newer.commit} before its files were rebuilt from their Xet upload"
        revision.move(Revision.State.FAILED, actor=revision.published_by, failure_reason=reason)
        return
    storage = get_storage(revision.storage_backend)
    try:
        complete(revision, storage, revision.published_by, supersede=True, via="hub commit, its Xet files rebuilt")
    except (PublishError, StorageError) as error:
        revision.move(Revision.State.FAILED, actor=revision.published_by, failure_reason=str(error))
    revision.refresh_from_db()


def assembly_refused(obj: LfsObject, reason: str) -> None:
    """A file sent by Xet was refused as it was rebuilt: every revision still waiting for it fails, saying why."""
    waiting = Revision.objects.filter(state=Revision.State.ASSEMBLING, files__object_key=obj.key).distinct()
    for revision in waiting:
        path = revision.files.filter(object_key=obj.key).values_list("path", flat=True).first()
        revision.move(
            Revision.State.FAILED,
            actor=revision.published_by,
            failure_reason=f"{path} was refused as it was rebuilt from its Xet upload: {reason}",
        )


def commit(repo: Repo, user, header: dict, operations, *, request=None) -> Revision:
    """A new revision of `repo`: its head's files with `operations` applied, completed through the same
    draft as every publish (uploaded, or incomplete while its index names files it lacks); an uploaded
    one supersedes the verification of older ones still under way."""
    storage = get_storage()
    head = head_revision(repo)
    parent = header.get("parentCommit")
    if parent and (head is None or not head.commit.startswith(str(parent).lower())):
        raise CommitRefused(
            f"A commit has happened since {parent}: the head of {repo.repo_id} is now "
            f"{head.commit if head else 'empty'}. Refresh and try again.",
            412,
        )
    if head is not None and head.storage_backend != storage.name:
        raise CommitRefused(
            f"the files of {repo.repo_id} are in {head.storage_backend} storage and new revisions go to "
            f"{storage.name}: publish the whole checkpoint with publish_checkpoint instead",
            409,
        )
    files = apply(carried(head), operations, repo, storage)
    if not files:
        raise CommitRefused("a commit must leave at least one file in the repo")
    entries = sorted(files.values(), key=lambda entry: entry.path)
    draft = start_draft(
        Revision(
            commit=secrets.token_hex(20),
            state=Revision.State.DRAFT,
            storage_backend=storage.name,
            published_by=user,
            draft_source=f"hub commit by {user.get_username()}",
            publish_heartbeat_at=timezone.now(),
        ),
        repo.org,
        repo.name,
        entries,
        digests={entry.path: entry.sha256 for entry in entries if entry.sha256},
        references={entry.path: (entry.source.key, entry.source.etag) for entry in entries if entry.source},
    )
    summary = str(header.get("summary", ""))[:500]
    try:
        publish_draft(
            draft,
            storage,
            user,
            lambda: place(draft, storage, entries),
            request=request,
            supersede=True,
            via="hub commit",
            summary=summary,
            parent=head.commit if head else None,
        )
    except (PublishError, StorageError) as error:
        discard_draft(draft, actor=user, reason=f"the commit could not be stored: {error}")
        raise CommitRefused(f"the commit could not be stored ({error}); commit again", 503) from None
    draft.refresh_from_db()
    if draft.state == Revision.State.ASSEMBLING and not still_assembling(list(draft.files.all())):
        # Its last file was accepted while it was being committed, before the worker could find it waiting.
        complete_assembled(draft)
    return draft
