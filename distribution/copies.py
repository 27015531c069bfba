"""Traceable copies: each recipient's copy of a traceable revision, issued at their first download of it
and served from then on by every channel (Hub protocol, links, manifest, SHA256SUMS).

A copy is its record (TracedCopy: per file, the sha256 and size of the bytes this recipient receives,
and their model.sig signed over those digests) and bytes made on the fly: a served shard is its base
file's prefix, shared by all (tracing.served), then the recipient's tail, made in memory from the keys.
Files without carriers are every recipient's as published. The served bases stay open per process
(ServedFile: the carriers' marks and the prefix's hash state), so a copy costs its tails, not its size.
"""

import contextlib
import copy as shallow
import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from access.gate import AccessDenied
from audit.chain import record
from audit.tags import Tag
from distribution import trace_keys
from distribution.models import Revision, RevisionFile, TracedCopy, TracedRevision
from distribution.storage import LocalStorage, ObjectChanged, StorageError, get_storage, still_held
from hub.errors import Unavailable
from tracing.keys import CopyKeys
from tracing.leaks import leak_files
from tracing.safetensors_file import MAX_HEADER_BYTES, parse_header
from tracing.served import ServedFile, check_range, layout_of, on_cores, served_layout, split_range
from tracing.tracer import DEFAULT_THRESHOLD, OriginalCarriers, Tracer, TraceResult, trace
from verification.core.signature import SIGNATURE_PATH, is_signed_path, sign_digests
from verification.signing import SigningUnavailable, current_key


def traced_revision(revision: Revision) -> TracedRevision | None:
    """The served layout a revision's copies are made from; None for a revision served as published
    (its repo is not traceable, or it was verified before the repo became so)."""
    if not revision.repo.traceable:
        return None
    if not hasattr(revision, "_traced_layout"):
        revision._traced_layout = TracedRevision.objects.filter(revision=revision).first()
    return revision._traced_layout


def copy_keys(traced: TracedRevision) -> CopyKeys:
    revision = traced.revision
    return CopyKeys(trace_keys.by_id(traced.key_id), revision.repo.repo_id, revision.commit)


def served_file(traced: TracedRevision, path: str) -> ServedFile:
    """The served base of `path`, opened once per process (its marks and prefix digest are kept); a local
    one is looked for again at each call, so that no copy is issued or sent once it is gone."""
    key = (traced.revision_id, path, traced.key_id)
    with opening(key):
        found = _served.get(key)
        if found is None:
            found = open_served(traced, path)
            _served.put(key, found)
        elif not isinstance(found, StreamedServedFile) and not found.path.is_file():
            _served.drop(key)
            raise base_missing(traced, path, FileNotFoundError(f"{found.path} is gone"))
        elif isinstance(found, StreamedServedFile) and found.replaced():
            _served.drop(key)
            raise base_missing(traced, path, ObjectChanged(f"{found.key} was replaced since it was verified"))
    return found


def open_served(traced: TracedRevision, path: str) -> ServedFile:
    """CopyUnavailable when this host lacks the revision's trace key or its served base is missing or changed."""
    keys = keys_for(traced)
    storage = get_storage(traced.revision.storage_backend)
    carriers = traced.carriers[path]
    try:
        recorded = traced.files[path]
        if isinstance(storage, LocalStorage):
            base = storage.path(traced.storage_key(path))
            opened = ServedFile(base, served_layout(base, path, carriers), keys, recorded=recorded)
        else:
            opened = StreamedServedFile.fetch(storage, traced.storage_key(path), path, carriers, keys, recorded)
        if (opened.layout.size, opened.layout.prefix_size) != (recorded["size"], recorded["prefix_size"]):
            raise ValueError(f"its size or prefix is not the one verified ({opened.layout.size} bytes)")
    except (OSError, ValueError, StorageError, ObjectChanged) as error:
        raise base_missing(traced, path, error) from error
    return opened


class CopyUnavailable(Unavailable):
    """A traceable copy that cannot be made or sent on this host until an operator acts; nothing is issued."""


def base_missing(traced: TracedRevision, path: str, error: Exception) -> CopyUnavailable:
    repo_id, commit = traced.revision.repo.repo_id, traced.revision.commit
    return CopyUnavailable(
        f"{repo_id} gives each person a copy of their own, and {path} of revision {commit[:12]} cannot be made "
        f"now: its served layout is missing or damaged in storage. The operators must run `manage.py "
        f"prepare_traceable {repo_id} --revision {commit[:12]}` on a worker host; try again later.",
        f"served base {traced.storage_key(path)}: {error}",
    )


def keys_for(traced: TracedRevision) -> CopyKeys:
    try:
        return copy_keys(traced)
    except (LookupError, ImproperlyConfigured) as error:
        raise CopyUnavailable(
            f"{traced.revision.repo.repo_id} gives each person a copy of their own, made with trace key "
            f"{traced.key_id}, which this server does not hold. The operators must set TRACE_KEY (or "
            "TRACE_KEY_FALLBACKS) on every web host to the key the workers mark with; try again later.",
            str(error),
        ) from error


def signing_key():
    """The key each copy's model.sig is signed with: this host's configured one, never one made here (a web
    host that made its own would sign with a key nobody checks against)."""
    try:
        private_key, _ = current_key(generate=False)
    except SigningUnavailable as error:
        raise CopyUnavailable(
            "each copy of a traceable repo comes with a model.sig signed as it is issued, and this server has no "
            "usable signing key. The operators must set SIGNING_KEY_FILE on every web host to the key the "
            "workers sign releases with; try again later.",
            str(error),
        ) from error
    return private_key


class StreamedServedFile(ServedFile):
    """A served base in S3, streamed through the web tier: its header and carrier tail are read once into
    memory (the marks are made from them; nothing is written to disk); its prefix is streamed from S3 for
    every download (and once per process for its digest, when no prefix state was recorded with it).
    Nothing per recipient is stored. Every read is of the version verified (its ETag, recorded with the
    layout): a prefix written over in the bucket would otherwise go out in every copy, unseen, since only
    tails are hashed."""

    def __init__(
        self, layout, keys: CopyKeys, base_tail: bytes, storage, key: str, etag: str, recorded: dict | None = None
    ):
        super().__init__(PurePosixPath(key), layout, keys, base_tail, recorded=recorded)
        self.storage, self.key, self.etag = storage, key, etag

    @classmethod
    def fetch(cls, storage, key: str, path: str, carriers, keys: CopyKeys, recorded=None) -> "StreamedServedFile":
        listed = storage.stored_object(key)  # one HEAD, not a listing of the base's folder
        if listed is None:
            raise FileNotFoundError(f"{key} is not in storage")
        # Layouts recorded before ETags were have none: the one listed now is read throughout.
        etag = (recorded or {}).get("etag") or listed.etag
        if listed.etag.strip('"') != etag.strip('"'):
            raise ObjectChanged(f"{key} was replaced since it was verified")
        length = int.from_bytes(storage.read_range(key, 0, 8, etag=etag), "little")
        if not 0 < length <= min(MAX_HEADER_BYTES, listed.size - 8):
            raise ValueError(f"{key}: its header claims {length} bytes")
        header = parse_header(storage.read_range(key, 8, length, etag=etag), listed.size)
        layout = layout_of(header, path, carriers, key)
        tail = storage.read_range(key, layout.prefix_size, layout.tail_size, etag=etag) if layout.tail_size else b""
        return cls(layout, keys, tail, storage, key, etag, recorded)

    def replaced(self) -> bool:
        """Whether the bucket no longer holds this base as it was read (asked once per download, so that one
        written over is refused with a 503 before any byte goes out, not cut off after its headers)."""
        return still_held(self.storage, self.key, self.layout.size, self.etag) is False

    def prefix_pieces(self):
        return self.storage.stream_range(self.key, 0, self.layout.prefix_size, etag=self.etag)

    def read(self, tail: bytes | None, start: int = 0, end: int | None = None) -> Iterator[bytes | memoryview]:
        end = self.layout.size if end is None else end
        check_range(self.layout, tail, start, end)
        prefix, tail_part = split_range(self.layout, start, end)
        if prefix is not None:
            yield from self.storage.stream_range(self.key, *prefix, etag=self.etag)
        if tail_part is not None:
            yield memoryview(tail)[tail_part[0] : tail_part[1]]


def recipient_of(user, grant) -> str:
    return f"grant-{grant.pk}" if grant is not None else f"user-{user.pk}"


def find_copy(revision: Revision, user, grant) -> TracedCopy | None:
    copies = TracedCopy.objects.filter(revision=revision)
    return (copies.filter(grant=grant) if grant is not None else copies.filter(grant=None, user=user)).first()


def issue_copy(revision: Revision, traced: TracedRevision, user, grant, *, request=None) -> TracedCopy:
    """The copy of `revision` for this grant (or, with none, this account): made and audited at the first
    request, the same record ever after. Two first requests at once make one copy (the constraint decides)."""
    existing = find_copy(revision, user, grant)
    if existing is not None:
        return existing
    recipient = recipient_of(user, grant)
    private_key = signing_key()
    traced.revision = revision  # loaded with its repo: the threads below query nothing
    stored_files = list(revision.files.exclude(path=SIGNATURE_PATH))
    files = {row.path: {"sha256": row.sha256, "size": row.size} for row in stored_files}

    def personal_digest(path: str) -> dict:
        source = CopySource(served=served_file(traced, path), recipient=recipient)
        return {"sha256": source.served.sha256(source.tail()), "size": source.served.layout.size}

    differing = [row.path for row in stored_files if row.path in traced.files]
    files.update(zip(differing, on_cores(personal_digest, differing), strict=True))
    signed = {path: entry["sha256"] for path, entry in files.items() if is_signed_path(path)}
    signature = sign_digests(revision.repo.repo_id, signed, private_key)
    files[SIGNATURE_PATH] = {"sha256": sha256_hex(signature), "size": len(signature)}
    try:
        with transaction.atomic():
            issued = TracedCopy.objects.create(
                revision=revision,
                grant=grant,
                user=user,
                username=user.get_username(),
                recipient=recipient,
                key_id=traced.key_id,
                scheme=traced.scheme,
                files=files,
                signature=signature,
            )
            record(
                Tag.COPY_ISSUED,
                actor=user,
                subject=user,
                repo=revision.repo,
                request=request,
                commit=revision.commit,
                copy=issued.pk,
                grant=grant.pk if grant else None,
                key_id=traced.key_id,
                files=len(traced.files),
            )
    except IntegrityError:
        return find_copy(revision, user, grant)  # another request issued it first
    return issued


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_for(revision: Revision, user, grant, *, request=None) -> TracedCopy | None:
    """This person's copy of a traceable revision (issued now if new); None for a revision served as published."""
    traced = traced_revision(revision)
    if traced is None:
        return None
    if user is None or not user.is_authenticated:
        raise AccessDenied(
            "GatedRepo",
            f"{revision.repo.repo_id} gives each person a copy of their own: sign in, or send a token",
            401,
        )
    return issue_copy(revision, traced, user, grant, request=request)


def digests_for(revision: Revision, user, grant, *, request=None) -> dict[str, dict]:
    """path -> {"sha256", "size"} of what this person receives, for the listings; {} when every file is
    served as published."""
    issued = copy_for(revision, user, grant, request=request)
    return issued.files if issued is not None else {}


@dataclass
class CopySource:
    """Where a personal file's bytes come from: a served base and the recipient, or bytes held (model.sig)."""

    served: ServedFile | None = None
    recipient: str = ""
    data: bytes | None = None
    _tail: bytearray | None = field(default=None, repr=False)

    def tail(self) -> bytearray:
        if self._tail is None:
            self._tail = recent_tails.get((self.served, self.recipient))
        if self._tail is None:
            self._tail = self.served.tail_for(self.recipient)
            recent_tails.put((self.served, self.recipient), self._tail)
        return self._tail

    def pieces(self, start: int, end: int) -> Iterator[bytes | memoryview]:
        """Bytes [start, end) of the file (the recipient's tail is made only for a range that reaches it)."""
        if self.data is not None:
            view = memoryview(self.data)[start:end]
            return iter([view] if len(view) else [])
        return self.served.read(self.tail() if end > self.served.layout.prefix_size else None, start, end)

    def local_prefix(self, start: int, end: int) -> tuple[Path, int, int] | None:
        """(base file, first, end) of the part of [start, end) that is the shared prefix of a base on local
        storage, which a server can send from the file itself; None when there is none."""
        if self.served is None or isinstance(self.served, StreamedServedFile):
            return None
        prefix, _ = split_range(self.served.layout, start, end)
        return (self.served.path, *prefix) if prefix else None


class Recent:
    """The values used last in this process, up to `capacity` by `weight` (one each by default): what is
    used again soon costs nothing, and a long-running process holds no more than the capacity."""

    def __init__(self, capacity: int, weight=lambda value: 1):
        self.capacity, self.weight, self._held, self._lock = capacity, weight, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
            return self._held.get(key)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def drop(self, key) -> None:
        with self._lock:
            self._held.pop(key, None)

    def put(self, key, value) -> None:
        with self._lock:
            self._held[key] = value
            self._held.move_to_end(key)
            while sum(map(self.weight, self._held.values())) > self.capacity and len(self._held) > 1:
                self._held.popitem(last=False)

    def __len__(self) -> int:
        return len(self._held)


# The tails made last, by bytes: the tail a copy's issue made serves its first download, and the ranges of
# one download (resumes, parallel parts) make it once.
recent_tails = Recent(128 * 1024 * 1024, weight=len)
# The served bases opened last, by the memory their carriers' marks take (the tail's bits and keyed pattern).
_served = Recent(settings.TRACE_SERVED_BASES_MB * 1024 * 1024, weight=lambda served: 2 * served.layout.tail_size)
_openings: dict[tuple, threading.Lock] = {}
_openings_guard = threading.Lock()


def opening(key: tuple) -> threading.Lock:
    """The lock of one base's opening: two requests never read the same base twice, and different bases
    (a copy's files) open at once."""
    with _openings_guard:
        return _openings.setdefault(key, threading.Lock())


def personal(stored: RevisionFile, who, *, request=None) -> RevisionFile:
    """`stored` as this downloader receives it: unchanged, or (a file of a traceable revision that differs
    per recipient) an unsaved copy of the row with their sha256 and size and a `copy_source` for the bytes.
    AccessDenied for an anonymous download of a traceable revision."""
    if getattr(stored, "copy_source", None) is not None:
        return stored
    traced = traced_revision(stored.revision)
    if traced is None or (stored.path not in traced.files and stored.path != SIGNATURE_PATH):
        return stored
    issued = copy_for(stored.revision, who.account, who.grant, request=request)
    view = shallow.copy(stored)
    view.sha256, view.size = issued.files[stored.path]["sha256"], issued.files[stored.path]["size"]
    if stored.path == SIGNATURE_PATH:
        view.copy_source = CopySource(data=bytes(issued.signature))
    else:
        served = served_file(traced, stored.path)
        view.copy_source = CopySource(served=served, recipient=issued.recipient)
    return view


@dataclass(frozen=True)
class Accused:
    """A recipient a leak names: their copy (grant, account, when it was issued) and score (None: byte-exact)."""

    copy: TracedCopy
    score: float | None
    exact_file: str | None

    def to_json(self) -> dict:
        return {
            "score": self.score,
            "exact_file": self.exact_file,
            "user": self.copy.username,
            "grant": self.copy.grant_id,
            "copy": self.copy.pk,
            "downloaded_at": self.copy.created_at.isoformat(),
        }


@dataclass(frozen=True)
class LeakVerdict:
    revision: Revision
    result: TraceResult
    named: list[Accused]

    def to_json(self) -> dict:
        return {
            "repo": self.revision.repo.repo_id,
            "revision": self.revision.commit,
            "named": [accused.to_json() for accused in self.named],
            "highest_other": self.result.highest_other,
            "trace": self.result.to_json(),
        }


def traceable_revisions(repo_id: str | None = None) -> list[Revision]:
    """The revisions a leak may come from, newest first: of `repo_id`, or of every repo."""
    revisions = Revision.objects.select_related("repo").filter(traced__isnull=False)
    if repo_id:
        org, _, name = repo_id.partition("/")
        revisions = revisions.filter(repo__org=org, repo__name=name)
    return list(revisions.order_by("-created_at", "-id"))


def trace_against(revision: Revision, paths: list[Path], threshold: float) -> LeakVerdict:
    """Score every copy of `revision` against the leak at `paths` (TracingInputError: unreadable input)."""
    traced = revision.traced
    with tempfile.TemporaryDirectory(prefix="trace-") as scratch:
        bases = {path: base_file(traced, path, Path(scratch)) for path in traced.carriers}
        names = [name for held in traced.carriers.values() for name in held]
        tracer = Tracer(OriginalCarriers.from_files(bases, names), copy_keys(traced))
    issued = {c.recipient: c for c in TracedCopy.objects.filter(revision=revision, key_id=traced.key_id)}
    by_digest = {c.files[path]["sha256"]: r for r, c in issued.items() for path in traced.files}
    result = trace(paths, tracer, sorted(issued), threshold=threshold, issued_digests=by_digest)
    named = [Accused(issued[s.recipient], s.score, s.file) for s in result.named]
    return LeakVerdict(revision, result, named)


def base_file(traced: TracedRevision, path: str, scratch: Path) -> Path:
    """A served base as a local file: itself on local storage, fetched from S3 into `scratch` otherwise."""
    storage = get_storage(traced.revision.storage_backend)
    if isinstance(storage, LocalStorage):
        return storage.path(traced.storage_key(path))
    destination = scratch / path
    destination.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(storage.open(traced.storage_key(path))) as source, open(destination, "wb") as out:
        shutil.copyfileobj(source, out, 8 * 1024 * 1024)
    return destination


def trace_leak(paths, *, repo_id: str | None = None, threshold: float = DEFAULT_THRESHOLD, actor=None, request=None):
    """Every traceable revision's verdict on a leak, those naming someone first; audited. LookupError
    when there is no traceable revision to trace against; TracingInputError for unreadable input."""
    paths = [Path(path) for path in paths]
    leak_files(paths)  # unreadable input is refused before any work
    revisions = traceable_revisions(repo_id)
    if not revisions:
        raise LookupError(f"no traceable revision{' of ' + repo_id if repo_id else ''} has been verified")
    verdicts = [trace_against(revision, paths, threshold) for revision in revisions]
    verdicts.sort(key=lambda verdict: not verdict.named)
    record(
        Tag.LEAK_TRACED,
        actor=actor,
        repo=verdicts[0].revision.repo,
        request=request,
        commit=verdicts[0].revision.commit,
        files=[path.name for path in paths][:20],
        named=[accused.copy.username for verdict in verdicts for accused in verdict.named],
        threshold=threshold,
    )
    return verdicts
