"""Uploads by Xet, the protocol the Hub client (with hf_xet) uploads by unless told otherwise, received as
the content-addressed store (CAS) the client expects, under the portal's own `/xet/ORG/NAME/`.

The client asks `xet-write-token` for a short-lived token (signed here, bound to the caller, the repo and
the write scope), sends xorbs (compressed chunks) and then shards (per file, which chunk ranges of which
xorbs make it, and its sha256). The portal keeps the xorbs per repo. A shard is checked against them (every
chunk range held, in the sizes it gives) and answered at once; each of its files becomes an assembling LFS
object, which a worker rebuilds from the xorbs into storage (`assemble`) and accepts, as if it had arrived
by the LFS batch API, only when its bytes have the sha256 the shard gives. The client then commits the files
as LFS pointers to those sha256s: a commit naming a file still being rebuilt waits as an assembling
revision, never verified or served, and is completed when its last file is accepted (failed, with the
reason, when one is refused). The client's upload thus ends once its xorbs are stored, not after every
byte has been written to storage a second time.

A xorb is kept only when its bytes are the hash it is sent under. The dedup query the client asks before
sending data is answered from the repo's own xorbs only (never another repo's: a publisher learns nothing
of what others hold), with the xorb holding the chunk and those uploaded after it, so an interrupted
upload run again, or a changed folder sent from another machine, sends only what the repo lacks.

Not offered: deduplication across repos, upload grants (straight to S3) and the streaming shard call; the
client falls back to the plain calls. Downloads stay HTTP: nothing here serves a file.
"""

import contextlib
import io
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from access.gate import permit_publish, token_in_force
from access.models import ApiToken, User
from distribution import hub_commits, lfs, xet_formats
from distribution.lfs import Refused
from distribution.models import LfsObject, Repo, XetDedupChunk, XetXorb
from distribution.storage import (
    HEAD_BYTES,
    PARTIAL_SUFFIX,
    Digest,
    DigestingAside,
    LocalStorage,
    StorageError,
    Transfer,
    ahead,
    get_storage,
)

log = logging.getLogger(__name__)
SALT = "weightgate.xet-token"
WRITE = "write"
# The chunks one dedup answer lists at most (about 4 GiB of data in a 4 MiB answer): a client asks again
# past them, about every 16 MiB it has not matched yet.
DEDUP_ANSWER_CHUNKS = 65536
# Sent by name: the task module imports this one.
ASSEMBLE_TASK = "distribution.tasks.assemble_xet_upload"
# Longer than a rebuild of the largest file with all its retries while storage is away (about 45 minutes).
ASSEMBLY_STUCK_AFTER = timedelta(hours=3)
PARTS_IN_FLIGHT = 2  # the parts of one rebuilt file being stored at once (each held in memory)
# Xorbs queued before the rebuild reaches them: at most three (of up to 64 MiB) in memory, the one being
# decompressed, the one queued and the one being fetched.
XORBS_AHEAD = 1


@dataclass(frozen=True)
class CasAccess:
    """What a valid Xet token lets its bearer do: write to `repo` as `user`."""

    user: User
    repo: Repo
    api_token: ApiToken | None


def issue_token(user, repo: Repo, api_token) -> tuple[str, int]:
    """A write token for `repo` (its value, and when it expires as a Unix time)."""
    payload = {"u": user.pk, "r": repo.pk, "t": getattr(api_token, "pk", None), "s": WRITE}
    return signing.dumps(payload, salt=SALT), int(time.time()) + settings.XET_TOKEN_SECONDS


def cas_access(value: str, org: str, name: str) -> CasAccess:
    """Who a Xet token speaks for, refused (401: the client asks for a new one) when it is altered or expired,
    and (403) when it was given for another repo or its holder may no longer publish."""
    try:
        payload = signing.loads(value, salt=SALT, max_age=settings.XET_TOKEN_SECONDS)
    except signing.SignatureExpired:
        raise Refused("this Xet token expired: the client asks xet-write-token for a new one", 401) from None
    except signing.BadSignature:
        raise Refused("this Xet token is not valid (altered or cut): ask xet-write-token for a new one", 401) from None
    repo = Repo.objects.filter(pk=payload.get("r")).first()
    if repo is None or (repo.org, repo.name) != (org, name):
        given = repo.repo_id if repo else "a repo that is gone"
        raise Refused(f"this Xet token was given for {given}, not {org}/{name}: ask for a token for {org}/{name}", 403)
    if payload.get("s") != WRITE:
        raise Refused("this Xet token does not allow writing: ask xet-write-token for one", 403)
    user = User.objects.filter(pk=payload.get("u"), is_active=True).first()
    api_token = ApiToken.objects.filter(pk=payload["t"]).first() if payload.get("t") else None
    if user is None or (payload.get("t") and (api_token is None or not token_in_force(api_token))):
        raise Refused("the account or API token this Xet token was given to is gone, revoked or expired", 401)
    permit_publish(user, repo, api_token)  # publishers named by staff may change while a token lives
    return CasAccess(user, repo, api_token)


def xorb_key(repo: Repo, xorb_hash: str) -> str:
    return f"xet/{repo.org}/{repo.name}/xorbs/{xorb_hash}"


def checked_hash(text: str, what: str) -> str:
    if not xet_formats.HASH_TEXT.match(text):
        raise Refused(f"the {what} hash in the path must be 64 lowercase hex digits, not {text[:80]!r}")
    return text


def store_xorb(access: CasAccess, xorb_hash: str, data: bytes) -> bool:
    """Keep a xorb for the repo once its chunks read as chunks and hash to `xorb_hash`, with the chunks a
    dedup query may name; False when the repo holds it already."""
    checked_hash(xorb_hash, "xorb")
    storage = get_storage()
    held = XetXorb.objects.filter(repo=access.repo, storage_backend=storage.name, hash=xorb_hash)
    if held.exists():
        return False
    try:
        records = xet_formats.xorb_records(data)
    except xet_formats.Malformed as error:
        raise Refused(f"xorb {xorb_hash} was refused: {error}. Nothing of it was kept; upload again") from None
    if (actual := xet_formats.records_hash(records)) != xorb_hash:
        raise Refused(
            f"xorb {xorb_hash} was refused: its chunks hash to {actual}, not the hash it was sent under. Nothing "
            "of it was kept; upload it under its own hash (the Xet xorb hash)"
        )
    key = xorb_key(access.repo, xorb_hash)
    try:
        storage.put_bytes(key, data)
    except (OSError, StorageError) as error:
        raise Refused(f"xorb {xorb_hash} could not be stored ({error}); the client retries", 503) from None
    try:
        with transaction.atomic():
            xorb = XetXorb.objects.create(
                repo=access.repo,
                hash=xorb_hash,
                size=len(data),
                storage_backend=storage.name,
                key=key,
                chunks=xet_formats.packed_records(records),
                uploaded_by=access.user,
            )
            XetDedupChunk.objects.bulk_create(
                XetDedupChunk(repo=access.repo, xorb=xorb, hash=xet_formats.hash_text(record.hash), index=index)
                for index, record in enumerate(records)
                if index == 0 or xet_formats.dedup_eligible(record.hash)
            )
    except IntegrityError:
        return False  # the same xorb arrived twice at once: the same bytes under the same key
    return True


def dedup_answer(access: CasAccess, chunk_hash: str) -> bytes | None:
    """The shard answering a dedup query for a chunk of the repo's xorbs: the xorb holding it and those
    the repo received after it (a file's later xorbs follow its first), up to DEDUP_ANSWER_CHUNKS chunks;
    None when the repo has no such chunk to offer."""
    checked_hash(chunk_hash, "chunk")
    storage = get_storage()
    entry = (
        XetDedupChunk.objects.filter(repo=access.repo, hash=chunk_hash, xorb__storage_backend=storage.name)
        .order_by("xorb_id")
        .first()
    )
    if entry is None:
        return None
    following = XetXorb.objects.filter(repo=access.repo, storage_backend=storage.name, pk__gte=entry.xorb_id)
    xorbs, listed, oldest = [], 0, None
    for xorb in following.order_by("pk").only("hash", "size", "chunks", "created_at").iterator(chunk_size=16):
        records = xet_formats.unpacked_records(bytes(xorb.chunks))
        if not records:
            continue  # kept before chunk lists were: nothing to list
        if xorbs and listed + len(records) > DEDUP_ANSWER_CHUNKS:
            break
        xorbs.append(xet_formats.StoredXorb(xorb.hash, xorb.size, records))
        listed += len(records)
        oldest = min(oldest or xorb.created_at, xorb.created_at)
    # Trusted only until the daily job may delete the oldest of these xorbs.
    expires = oldest + timedelta(days=settings.XET_XORB_DAYS)
    return xet_formats.dedup_shard(xorbs, int(expires.timestamp()), int(time.time()))


class XorbReader:
    """The chunks of one file's terms, in order, from the repo's xorbs. A side thread fetches the next xorb
    while this one's chunks are decompressed (`depth` of them queued); a xorb is fetched again only when a
    term goes back to one read before it (a file's terms mostly follow one another)."""

    def __init__(self, storage, keys: dict[str, str], terms: tuple[xet_formats.Term, ...], depth: int):
        in_turn = [term.xorb for at, term in enumerate(terms) if at == 0 or terms[at - 1].xorb != term.xorb]
        self.fetched = ahead(((xorb, self.fetch(storage, keys[xorb])) for xorb in in_turn), depth)
        self.hash, self.data, self.chunks = "", b"", []

    @staticmethod
    def fetch(storage, key: str) -> bytes:
        with storage.open(key) as handle:
            return handle.read()

    def close(self) -> None:
        """Stop fetching (a rebuild that ends early)."""
        self.fetched.close()

    def term_bytes(self, term: xet_formats.Term):
        if term.xorb != self.hash:
            self.hash, self.data = next(self.fetched)
            self.chunks = xet_formats.xorb_chunks(self.data)
        if term.end > len(self.chunks):
            raise xet_formats.Malformed(
                f"a term names chunks [{term.start}, {term.end}) of xorb {term.xorb}, which has {len(self.chunks)}"
            )
        produced = 0
        for chunk in self.chunks[term.start : term.end]:
            piece = xet_formats.chunk_bytes(self.data, chunk)
            produced += len(piece)
            yield piece
        if produced != term.size:
            raise xet_formats.Malformed(
                f"chunks [{term.start}, {term.end}) of xorb {term.xorb} hold {produced} bytes, not {term.size}"
            )


class RebuiltFile(io.RawIOBase):
    """A file's bytes as its terms make them from the repo's xorbs, read in order as they are stored."""

    def __init__(self, reader: XorbReader, file: xet_formats.ShardFile):
        self.pieces = (piece for term in file.terms for piece in reader.term_bytes(term))
        self.held = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        pieces, count = [self.held], len(self.held)
        while size < 0 or count < size:
            piece = next(self.pieces, None)
            if piece is None:
                break
            pieces.append(piece)
            count += len(piece)
        self.held = b""
        if 0 <= size < count:  # the last piece is cut where the read ends, the rest kept for the next
            last = pieces.pop()
            cut = len(last) - (count - size)
            pieces.append(last[:cut])
            self.held = last[cut:]
        return b"".join(pieces)  # each byte copied once into the part (a 64 MiB part holds ~1000 chunks)


@dataclass
class Staged:
    obj: LfsObject
    digest: Digest
    etag: str


def register_shard(access: CasAccess, data: bytes) -> list[LfsObject]:
    """Take the files a shard records for rebuilding by a worker (`assemble`), once each is known to be made
    of chunks the repo holds, in the sizes the shard gives; one file that is not refuses the shard, and then
    nothing of it is kept. The shard is answered at once: the client's commit then waits as an assembling
    revision until every file is rebuilt and accepted as its sha256 (or fails when one is not)."""
    try:
        files = xet_formats.shard_files(data)
    except xet_formats.Malformed as error:
        raise Refused(f"the shard was refused: {error}. Nothing was kept") from None
    storage = get_storage()
    needed = {term.xorb for file in files for term in file.terms}
    xorbs = {
        xorb.hash: xorb
        for xorb in XetXorb.objects.filter(repo=access.repo, storage_backend=storage.name, hash__in=needed).only(
            "hash", "key", "chunks"
        )
    }
    if missing := sorted(needed - xorbs.keys()):
        raise Refused(
            f"the shard names {len(missing)} xorb(s) {access.repo.repo_id} does not hold ({', '.join(missing[:3])}"
            f"{'...' if len(missing) > 3 else ''}); nothing was kept. Upload again; if the client still names "
            "them, it remembers an upload whose xorbs were deleted: remove its cache (~/.cache/huggingface/xet)"
        )
    records = {name: xet_formats.unpacked_records(bytes(xorb.chunks)) for name, xorb in xorbs.items()}
    wanted = {}
    for file in files:
        if problem := next(filter(None, (xet_formats.term_problem(t, records[t.xorb]) for t in file.terms)), None):
            raise Refused(f"the shard was refused: file {file.sha256}: {problem}. Nothing was kept")
        if file.sha256 not in wanted and lfs.committable_source(access.repo, file.sha256, storage) is None:
            wanted[file.sha256] = file  # else held, being rebuilt for an earlier shard, or twice in this one
    heads = {sha256: file_head(storage, xorbs, records, file) for sha256, file in wanted.items()}
    with transaction.atomic():
        assembling = [assembling_object(access, file, heads[sha256], storage) for sha256, file in wanted.items()]
        transaction.on_commit(lambda: queue_assembly([obj.pk for obj in assembling]))
    index_file_starts(access, files, xorbs, records)
    return assembling


def queue_assembly(object_ids: list[int]) -> None:
    """Hand each rebuild to the workers (any queue's: `assemble` needs storage and the database only)."""
    for object_id in object_ids:
        current_app.send_task(ASSEMBLE_TASK, args=[object_id])


def file_head(storage, xorbs: dict, records: dict, file: xet_formats.ShardFile) -> bytes:
    """The file's first HEAD_BYTES, from the chunks that begin its first term (read in one ranged GET), by
    which the commit judges its kind before any worker has rebuilt it."""
    term = file.terms[0]
    chunks, plain = records[term.xorb][term.start : term.end], 0
    count = 0
    while count < len(chunks) and plain < HEAD_BYTES:
        plain, count = plain + chunks[count].size, count + 1
    first, last = chunks[0], chunks[count - 1]
    key = xorbs[term.xorb].key
    try:
        data = storage.read_range(key, first.start, last.end - first.start, etag="")
    except (OSError, StorageError) as error:
        raise Refused(f"xorb {term.xorb} cannot be read now ({error}); the client retries", 503) from None
    head, at = b"", 0
    try:
        for index in range(count):
            chunk = xet_formats.chunk_at(data, at, term.start + index)
            head += xet_formats.chunk_bytes(data, chunk)
            at = chunk.offset + chunk.stored
    except xet_formats.Malformed as error:
        raise Refused(f"the shard was refused: file {file.sha256}: {error}. Nothing was kept") from None
    return head[:HEAD_BYTES]


def assembling_object(access: CasAccess, file: xet_formats.ShardFile, head: bytes, storage) -> LfsObject:
    obj = lfs.pending_object(access.repo, access.user, file.sha256, file.size, storage, multipart=False)
    obj.state, obj.head, obj.xet_terms = LfsObject.State.ASSEMBLING, head, xet_formats.packed_terms(file.terms)
    obj.save(update_fields=["state", "head", "xet_terms"])
    return obj


def index_file_starts(access: CasAccess, files: list[xet_formats.ShardFile], xorbs: dict, records: dict) -> None:
    """Let a dedup query find each file by its first chunk (the one every client asks about), as a later
    upload of the same file from a machine that does not remember this one will. `xorbs` and `records`:
    the shard's xorbs by hash, and their chunk lists."""
    entries = []
    for xorb_hash, index in {(file.terms[0].xorb, file.terms[0].start) for file in files}:
        if index < len(records[xorb_hash]):  # else a xorb kept before chunk lists were: nothing to answer with
            chunk = xet_formats.hash_text(records[xorb_hash][index].hash)
            entries.append(XetDedupChunk(repo=access.repo, xorb=xorbs[xorb_hash], hash=chunk, index=index))
    XetDedupChunk.objects.bulk_create(entries, ignore_conflicts=True)


def assemble(object_id: int) -> LfsObject | None:
    """A worker's part: rebuild an assembling upload from the repo's xorbs into where it is staged, hashing
    it on the way, and accept it when it is its sha256; the revisions waiting for it are then completed, or
    failed with the reason when it is refused (its bytes deleted). StorageError when storage is away (the
    task is tried again); None when the object was done or refused before."""
    obj = LfsObject.objects.select_related("repo").filter(pk=object_id, state=LfsObject.State.ASSEMBLING).first()
    if obj is None:
        return None
    storage = get_storage(obj.storage_backend)
    file = xet_formats.ShardFile("", obj.oid, xet_formats.unpacked_terms(bytes(obj.xet_terms)))
    needed = {term.xorb for term in file.terms}
    keys = dict(
        XetXorb.objects.filter(repo=obj.repo, storage_backend=storage.name, hash__in=needed).values_list("hash", "key")
    )
    try:
        if missing := sorted(needed - keys.keys()):
            raise Refused(f"its xorbs {', '.join(missing[:3])} were deleted before it was rebuilt; upload it again")
        staged = stage(obj, keys, file, storage)
        accepted = lfs.settle(staged.obj, staged.digest, staged.etag)
    except Refused as refused:
        if refused.status == 503:
            raise StorageError(refused.message) from None
        log.warning("%s upload %s (%s) refused as it was rebuilt: %s", obj.repo.repo_id, obj.pk, obj.oid, refused)
        discard_staged(obj, storage)
        LfsObject.objects.filter(pk=object_id).delete()  # settle deletes it itself when the size is wrong
        hub_commits.assembly_refused(obj, refused.message)
        return None
    hub_commits.assembled(accepted)
    return accepted


def stuck_assemblies() -> list[int]:
    """The assembling uploads older than any rebuild with its retries takes (ASSEMBLY_STUCK_AFTER): their
    message was lost with a broker that restarted."""
    cutoff = timezone.now() - ASSEMBLY_STUCK_AFTER
    stuck = LfsObject.objects.filter(state=LfsObject.State.ASSEMBLING, created_at__lt=cutoff)
    return list(stuck.values_list("pk", flat=True))


def stage(obj: LfsObject, keys: dict[str, str], file: xet_formats.ShardFile, storage) -> Staged:
    """One file rebuilt from the repo's xorbs straight into where `obj` is staged, hashed on the way, and kept
    there (not yet accepted) only when it is the sha256 the shard gives."""
    key = lfs.staging_key(obj, storage)
    try:
        with DigestingAside() as digesting:
            etag = rebuild(storage, key, keys, file, digesting)
    except xet_formats.Malformed as error:
        raise Refused(f"file {file.sha256} cannot be rebuilt: {error}") from None
    except (OSError, StorageError) as error:
        discard_staged(obj, storage)
        raise Refused(f"file {file.sha256} could not be rebuilt and stored ({error})", 503) from None
    digest = digesting.result()
    if digest.sha256 != file.sha256:
        raise Refused(
            f"the bytes its Xet upload makes have sha256 {digest.sha256}, not the {file.sha256} its shard gives. "
            "Nothing of them was kept; upload it again"
        )
    return Staged(obj, digest, "" if isinstance(storage, LocalStorage) else etag.strip('"'))


def rebuild(
    storage, key: str, keys: dict[str, str], file: xet_formats.ShardFile, digesting, depth: int = XORBS_AHEAD
) -> str:
    """Store the bytes `file`'s terms make of the xorbs at `keys` (xorb hash -> key) under `key`,
    PARTS_IN_FLIGHT parts at once, feeding `digesting` each in order; the stored object's ETag ("" for local
    files). `depth`: xorbs fetched ahead (0: each when the rebuild reaches it)."""
    reader = XorbReader(storage, keys, file.terms, depth)
    with Transfer(PARTS_IN_FLIGHT) as transfer, contextlib.closing(reader):
        return storage.upload(key, RebuiltFile(reader, file), file.size, transfer, digest=digesting).etag


def discard_staged(obj: LfsObject, storage) -> None:
    """Delete what staging wrote: a whole file, and what a write cut off left (a partial file, S3 parts)."""
    key = lfs.staging_key(obj, storage)
    with contextlib.suppress(OSError, StorageError):  # the daily job deletes what is left of an upload
        storage.delete(key)
        if isinstance(storage, LocalStorage):
            storage.delete(key + PARTIAL_SUFFIX)
            with contextlib.suppress(OSError):  # its folder too, unless another upload of the oid is in it
                storage.path(key).parent.rmdir()
        else:
            storage.discard_unfinished(key)


def discard_old_xorbs() -> int:
    """Delete the xorbs uploaded more than XET_XORB_DAYS ago (the files rebuilt from them stay); how many.
    Run daily with the drafts' job."""
    cutoff = timezone.now() - timedelta(days=settings.XET_XORB_DAYS)
    count = 0
    for xorb in XetXorb.objects.filter(created_at__lt=cutoff):
        try:
            get_storage(xorb.storage_backend).delete(xorb.key)
        except (OSError, StorageError):
            continue  # storage is away: next time
        xorb.delete()
        count += 1
    return count
