"""Files a publisher's Hub client uploads by the Git LFS batch API, before a commit names them.

The batch call announces each file by its sha256 (the oid) and size. An object the repo already holds
(accepted earlier, or in one of its revisions) gets no action: the client sends nothing, which is how a
run cut off halfway resumes. Any other gets an upload: on S3, presigned links to S3 itself (one PUT, or
one per part of a multipart upload) so its bytes never pass through the portal; on local storage, links
to the portal's own signed endpoints, which write the bytes where the object will live.

An object is `accepted` only once the portal has read back the whole of it and found the oid: for a
multipart upload, when the client's completion call assembles the parts; for a single PUT, at the
verify call the client makes next. The reading happens inside that call, not in a worker, because the
client treats the call's answer as final and goes on to commit: only an answer given after the hash
can refuse the object before a commit names it (S3 streams it at its own rate, hashed as it comes).
Bytes that differ are deleted and refused with a message. A commit's files refer to accepted objects
where they are (no copy), so an object a revision's file refers to is that file's bytes and stays for
good; one nobody commits is never listed or served, and the daily job deletes it
(`discard_unclaimed_objects`).
"""

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from distribution.models import LfsObject, Repo, Revision, RevisionFile
from distribution.storage import (
    Digest,
    LocalStorage,
    ObjectChanged,
    StorageError,
    get_storage,
    part_size_for,
    still_held,
)
from hub.errors import Refusal

OID = re.compile(r"^[0-9a-f]{64}$")
SALT = "weightgate.lfs-upload"
# How long the upload links of one batch answer stay valid: long enough for the parts of a large file
# sent one after another by the client, short enough that a leaked link soon stops working.
UPLOAD_LINK_SECONDS = 6 * 3600
# An upload no file refers to yet is offered to commits until this long before the daily job may delete
# it, so the job never deletes bytes a commit has just begun to refer to.
OFFERED_MARGIN = timedelta(hours=6)
OFFERED_CANDIDATES = 3  # revisions' files looked at in storage for an oid before sending the bytes again


class Refused(Refusal):
    """An upload step refused; `status` and the message are what the client shows."""


@dataclass(frozen=True)
class Source:
    """Bytes the repo already holds under some key, with what is known of them."""

    key: str
    size: int
    etag: str = ""  # the S3 version a file that refers to it reads: storage refuses any other
    head: bytes = b""  # the first bytes, when the object was hashed on arrival


def stored_source(repo: Repo, oid: str, storage) -> Source | None:
    """Where the repo holds the bytes whose sha256 is `oid` in `storage`: an accepted upload, or a
    file of one of its revisions (verified, or hashed on arrival); None when it holds none.

    Only what storage still holds as it was (the same size, and on S3 the same version) is offered: an
    object replaced behind the portal's back is not the oid's bytes, so its upload is forgotten and the
    client sends them again."""
    accepted = LfsObject.objects.filter(
        repo=repo,
        oid=oid,
        storage_backend=storage.name,
        state=LfsObject.State.ACCEPTED,
        created_at__gt=discard_cutoff() + OFFERED_MARGIN,
    ).first()
    if accepted is not None:
        # Unknown (storage away now): the client sends the bytes again, nothing wrong is kept.
        held = still_held(storage, accepted.key, accepted.size, accepted.etag)
        if held:
            return Source(accepted.key, accepted.size, accepted.etag, bytes(accepted.head))
        if held is False:  # replaced or gone (not merely unreachable now): no longer an upload of the oid
            accepted.delete()
    candidates = (
        RevisionFile.objects.select_related("revision__repo")
        .filter(revision__repo=repo, revision__storage_backend=storage.name)
        .exclude(revision__state__in=(Revision.State.DRAFT, Revision.State.FAILED))
        .filter(Q(sha256=oid) | Q(upload_sha256=oid))
        .order_by("-revision__created_at")
    )
    for stored in candidates[:OFFERED_CANDIDATES]:
        if still_held(storage, stored.storage_key, stored.size, stored.stored_etag):
            return Source(stored.storage_key, stored.size, stored.stored_etag)
    return None


def assembling_source(repo: Repo, oid: str, storage) -> Source | None:
    """Where a file sent by Xet will be once a worker has rebuilt it (distribution.xet.assemble): a commit may
    name it now and waits, assembling, until it is accepted."""
    obj = LfsObject.objects.filter(
        repo=repo, oid=oid, storage_backend=storage.name, state=LfsObject.State.ASSEMBLING
    ).first()
    return None if obj is None else Source(obj.key, obj.size, "", bytes(obj.head))


def committable_source(repo: Repo, oid: str, storage) -> Source | None:
    """Where a commit finds the bytes of `oid`: a file sent by Xet still being rebuilt, else what the repo holds.
    In that order: a worker may accept the file between the two looks, and then it is held."""
    return assembling_source(repo, oid, storage) or stored_source(repo, oid, storage)


def sign(obj: LfsObject) -> str:
    return signing.dumps({"o": obj.pk, "k": obj.key}, salt=SALT)


def signed_object(value: str) -> LfsObject:
    """The pending upload a signed link names; Refused when the link is altered, expired or used up."""
    try:
        payload = signing.loads(value, salt=SALT, max_age=UPLOAD_LINK_SECONDS)
    except signing.SignatureExpired:
        raise Refused(
            f"this upload link expired ({UPLOAD_LINK_SECONDS // 3600} hours after it was given); "
            "run the upload again for new links",
            403,
        ) from None
    except signing.BadSignature:
        raise Refused("this upload link is not valid: it was altered or cut", 403) from None
    obj = LfsObject.objects.select_related("repo").filter(pk=payload["o"], key=payload["k"]).first()
    if obj is None:
        raise Refused("this upload is gone (refused, or its bytes were replaced): run the upload again", 404)
    return obj


def upload_action(obj: LfsObject, storage, links) -> dict:
    """The `upload` action of one object: one PUT, or the parts' links with their size (`chunk_size`) and
    the completion call as `href`. `links` makes the portal's own signed URLs (the view knows the host)."""
    signed = sign(obj)
    if obj.part_size is None:
        if isinstance(storage, LocalStorage):
            return {"href": links("object", signed)}
        return {"href": storage.presigned_put(obj.key, expires_in=UPLOAD_LINK_SECONDS)}
    count = -(-obj.size // obj.part_size)
    if isinstance(storage, LocalStorage):
        parts = {str(number): links("part", signed, number) for number in range(1, count + 1)}
    else:
        parts = {
            str(number): storage.presigned_part(obj.key, obj.upload_id, number, expires_in=UPLOAD_LINK_SECONDS)
            for number in range(1, count + 1)
        }
    return {"href": links("complete", signed), "header": {"chunk_size": str(obj.part_size), **parts}}


def batch(repo: Repo, user, objects, transfers, links) -> dict:
    """The LFS batch answer for an upload: per object, nothing to do, an error, or where to send it."""
    storage = get_storage()
    multipart = "multipart" in (transfers or ["basic"])
    answers, used_parts = [], False
    for item in objects:
        oid, size = item.get("oid"), item.get("size")
        if not isinstance(oid, str) or not OID.match(oid) or not isinstance(size, int) or size < 0:
            answers.append(
                {
                    "oid": str(oid),
                    "size": size if isinstance(size, int) else 0,
                    "error": {"code": 422, "message": "give each object as its sha256 (64 hex digits) and size"},
                }
            )
            continue
        if stored_source(repo, oid, storage) is not None:
            answers.append({"oid": oid, "size": size})  # already here: the client sends nothing
            continue
        try:
            obj = pending_object(repo, user, oid, size, storage, multipart)
        except (OSError, StorageError) as error:  # a row left without its staged file takes no bytes
            raise Refused(f"storage cannot take uploads now ({error}); run the upload again shortly", 503) from None
        used_parts = used_parts or obj.part_size is not None
        answers.append(
            {
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": upload_action(obj, storage, links),
                    "verify": {"href": links("verify", sign(obj))},
                },
            }
        )
    return {"transfer": "multipart" if used_parts else "basic", "objects": answers, "hash_algo": "sha256"}


def pending_object(repo: Repo, user, oid: str, size: int, storage, multipart: bool) -> LfsObject:
    """A new upload of `oid`, under a key of its own (a link of an earlier answer never writes into it); on
    local storage its staged file is made now, and only what is written into that file counts."""
    part_size = part_size_for(size, settings.S3_MULTIPART_THRESHOLD)
    in_parts = multipart and size >= settings.S3_MULTIPART_THRESHOLD
    obj = LfsObject(
        repo=repo,
        oid=oid,
        size=size,
        storage_backend=storage.name,
        key=f"uploads/{repo.org}/{repo.name}/{oid}/{secrets.token_hex(8)}",
        part_size=part_size if in_parts else None,
        uploaded_by=user if getattr(user, "pk", None) else None,
    )
    if in_parts and not isinstance(storage, LocalStorage):
        obj.upload_id = storage.start_parts(obj.key)
    obj.save()
    if isinstance(storage, LocalStorage):
        storage.stage(incoming_key(obj))
    return obj


def incoming_key(obj: LfsObject) -> str:
    """Where local storage writes an upload until its bytes are known to be the oid."""
    return f"{obj.key}.incoming"


def staging_key(obj: LfsObject, storage) -> str:
    """Where an upload's bytes are written before they are judged: local storage renames them into place
    after, S3 keeps them where they are (a rejected object is deleted)."""
    return incoming_key(obj) if isinstance(storage, LocalStorage) else obj.key


def accept(obj: LfsObject) -> LfsObject:
    """Read the stored bytes back whole; keep them as the oid's when they are, else delete them and refuse."""
    if obj.state == LfsObject.State.ACCEPTED:
        return obj
    storage = get_storage(obj.storage_backend)
    key = staging_key(obj, storage)
    # On local storage the portal writes the parts itself: none may land between the hash and the move.
    with storage.sealed(key):
        try:
            found = storage.stored_object(key)
            if found is None or (isinstance(storage, LocalStorage) and found.size == 0 < obj.size):  # as staged
                raise Refused(f"nothing was uploaded for {obj.oid} yet: send its bytes to the upload link first", 404)
            digest = storage.digest(key, etag=found.etag, size=found.size)
        except (OSError, StorageError) as error:
            raise Refused(f"the upload of {obj.oid} cannot be read back ({error}); run the upload again", 503) from None
        except ObjectChanged:
            raise Refused(
                f"the upload of {obj.oid} was replaced while it was read back; run the upload again", 409
            ) from None
        return settle(obj, digest, found.etag)


def settle(obj: LfsObject, digest: Digest, etag: str) -> LfsObject:
    """Judge the bytes staged for `obj` by their `digest`: accepted when they are its oid and size, else
    deleted with the object and refused. `etag` is the staged S3 version ("" on local storage)."""
    storage = get_storage(obj.storage_backend)
    key = staging_key(obj, storage)
    if (digest.sha256, digest.size) != (obj.oid, obj.size):
        storage.delete(key)
        obj.delete()
        raise Refused(
            f"the bytes received for {obj.oid} have sha256 {digest.sha256} and {digest.size} bytes, not the "
            f"oid and the {obj.size} bytes announced: nothing of them was kept. Upload the file again "
            "(if it changed while it was being read, once it stays put)"
        )
    if isinstance(storage, LocalStorage):
        storage.rename(key, obj.key)
    obj.state, obj.etag, obj.head, obj.accepted_at = LfsObject.State.ACCEPTED, etag, digest.head, timezone.now()
    obj.upload_id = ""
    obj.save(update_fields=["state", "etag", "head", "accepted_at", "upload_id"])
    return obj


def complete_parts(obj: LfsObject, body: dict) -> LfsObject:
    """The client's completion call: assemble the parts it sent (on S3, CompleteMultipartUpload with the
    ETags it got back), then accept the whole object or refuse it."""
    if obj.part_size is None:
        raise Refused("this upload is one PUT, not parts: there is nothing to complete")
    if obj.state == LfsObject.State.ACCEPTED:
        return obj
    count = -(-obj.size // obj.part_size)
    parts = body.get("parts") if isinstance(body, dict) else None
    if body.get("oid") != obj.oid or not isinstance(parts, list):
        raise Refused(f"send the oid {obj.oid} and the parts as [{{partNumber, etag}}, ...]")
    numbers = [part.get("partNumber") if isinstance(part, dict) else None for part in parts]
    if numbers != list(range(1, count + 1)):
        raise Refused(f"the upload of {obj.oid} has {count} parts: send each of 1 to {count} once, in order")
    storage = get_storage(obj.storage_backend)
    if not isinstance(storage, LocalStorage):
        try:
            storage.complete_parts(obj.key, obj.upload_id, [str(part.get("etag", "")) for part in parts])
        except StorageError as error:
            raise Refused(f"the parts of {obj.oid} could not be assembled ({error}); send them again") from None
    return accept(obj)


def write_local(obj: LfsObject, stream, length: int, number: int | None = None) -> str:
    """Local storage takes the bytes itself: the whole object, or part `number` at its offset; the MD5 of
    what was written (the part's ETag). A whole object is accepted or refused at once."""
    storage = get_storage(obj.storage_backend)
    if not isinstance(storage, LocalStorage) or obj.state == LfsObject.State.ACCEPTED:
        raise Refused("this upload takes no bytes here (it is stored elsewhere, or already whole)")
    if number is None:
        if obj.part_size is not None or length != obj.size:
            raise Refused(f"send the {obj.size} bytes of {obj.oid} in one PUT")
        offset = 0
    else:
        count = -(-obj.size // obj.part_size) if obj.part_size else 0
        expected = min(obj.part_size or 0, obj.size - (number - 1) * (obj.part_size or 0))
        if not 1 <= number <= count or length != expected:
            raise Refused(f"part {number} of {obj.oid} must have {expected} bytes (the object has {count} parts)")
        offset = (number - 1) * obj.part_size
    try:
        etag = storage.write_at(incoming_key(obj), offset, stream, length)
    except (OSError, StorageError) as error:
        raise Refused(f"the bytes of {obj.oid} could not be stored ({error}); send them again", 503) from None
    except ObjectChanged:
        raise Refused(
            f"the upload of {obj.oid} was accepted or refused before these bytes were all sent: none of them were "
            "written. Send no part after the completion call; to upload the file again, start a new upload",
            409,
        ) from None
    if number is None:
        accept(obj)
    return etag


def discard_cutoff():
    """Uploads made before this, and that no revision's file refers to, are deleted by the daily job."""
    return timezone.now() - timedelta(days=settings.PUBLISH_DRAFT_DAYS)


def discard_unclaimed_objects() -> int:
    """Delete the uploads older than PUBLISH_DRAFT_DAYS that no revision's file refers to, with their
    unfinished parts; return how many. Run daily with the drafts' job. An upload a file refers to is kept,
    row and all: its bytes are that file's, and its row says who uploaded them."""
    referred = RevisionFile.objects.filter(object_key=OuterRef("key"))
    count = 0
    for obj in LfsObject.objects.filter(created_at__lt=discard_cutoff()).exclude(Exists(referred)):
        storage = get_storage(obj.storage_backend)
        try:
            if isinstance(storage, LocalStorage):
                storage.delete(incoming_key(obj))
            elif obj.upload_id:
                storage.abort({"Key": obj.key, "UploadId": obj.upload_id})
            storage.delete(obj.key)
        except (OSError, StorageError):
            continue  # storage is away: next time
        obj.delete()
        count += 1
    return count
