"""After a restore: whether the database, the storage and the keys that came back belong together, so
a released model is served whole and the audit log still proves itself. Each check gives one line."""

from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.chain import breaks
from audit.models import AuditEvent
from distribution.models import Revision, TracedRevision
from distribution.revision_objects import files_in_storage
from distribution.storage import StorageError, get_storage, still_held
from verification.core.signature import fingerprint, public_pem
from verification.models import SigningKey
from verification.signing import SigningUnavailable, load_private_key


@dataclass
class Finding:
    ok: bool
    text: str
    unreachable: bool = False  # storage could not be asked: nothing was judged


def migrations() -> Iterator[Finding]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        yield Finding(False, f"{len(plan)} migration(s) not applied: run `manage.py migrate` before serving")
    else:
        yield Finding(True, "the database schema is up to date")


def released_objects(progress=lambda done, total: None) -> Iterator[Finding]:
    """Every file of every released revision is in its storage (under its prefix, or where a commit referred
    to it), with the size recorded and, where one was referred to, the version; in a bucket that keeps
    versions, as the very version verified, which links name."""
    released = list(Revision.objects.filter(state=Revision.State.RELEASED).select_related("repo"))
    checked = 0
    for number, revision in enumerate(released, 1):
        named = f"{revision.repo.repo_id}@{revision.commit[:12]}"
        rows = list(revision.files.all())
        try:
            present = files_in_storage(revision, rows).files
        except (StorageError, OSError) as error:
            yield Finding(False, f"{named}: its storage cannot be read: {error}", unreachable=True)
            continue
        unpinned = []
        for stored in rows:
            found = present.get(stored.path)
            checked += 1
            if found is None:
                yield Finding(False, f"{named}: {stored.path} is missing (at {stored.storage_key})")
            elif found.size != stored.size:
                yield Finding(
                    False, f"{named}: {stored.path} holds {found.size} bytes, not the {stored.size} that were verified"
                )
            elif found.replaced:
                yield Finding(False, f"{named}: {stored.path} at {found.key} was replaced after it was committed")
            elif stored.stored_etag and (etag := found.etag.strip('"')) != stored.stored_etag:
                yield Finding(
                    False,
                    f"{named}: {stored.path} at {found.key} holds other bytes than were verified (ETag {etag}, not "
                    f"{stored.stored_etag}), and no version kept has them; no link to it is handed out: restore it "
                    "from the publisher's copy, or withdraw the revision",
                )
            elif found.written_over:
                yield Finding(
                    False,
                    f"{named}: {stored.path} at {found.key} was written over or deleted after it was verified; "
                    f"links serve the verified version ({found.version_id}), which the bucket keeps: put it back "
                    "as the current one",
                )
            elif stored.stored_version and found.version_id != stored.stored_version:
                unpinned.append(stored.path)
        if unpinned:
            # The verified size and ETag under another VersionId (a bucket restored by copying): links fall back
            # to it on the strength of an MD5 until `reverify` hashes it and records its version.
            listed = ", ".join(unpinned[:3]) + (", …" if len(unpinned) > 3 else "")
            yield Finding(
                False,
                f"{named}: {len(unpinned)} file(s) ({listed}) are no longer held at the S3 version verified, only "
                "as objects of the verified size and ETag (as after a restore by copying); run `manage.py reverify "
                f"{revision.repo.repo_id} --revision {revision.commit}` (or `reverify --all` for every released "
                "revision) to hash them again and record their versions",
            )
        traced = TracedRevision.objects.filter(revision=revision).first() if revision.repo.traceable else None
        if traced is not None:
            yield from served_bases(named, revision, traced)
        progress(number, len(released))
    yield Finding(True, f"{checked} file(s) of {len(released)} released revision(s) checked in storage")


def served_bases(named: str, revision: Revision, traced: TracedRevision) -> Iterator[Finding]:
    """Each served base of a traceable revision is still held as its copies are made from it (the size, and
    on S3 the ETag, recorded with the layout); copies of one that is not are refused with a 503."""
    storage = get_storage(revision.storage_backend)
    for path, layout in traced.files.items():
        key = traced.storage_key(path)
        held = still_held(storage, key, layout["size"], layout.get("etag", ""))
        if held is None:
            yield Finding(False, f"{named}: the served base of {path} cannot be looked up now", unreachable=True)
        elif not held:
            yield Finding(
                False,
                f"{named}: the served base of {path} ({key}) is gone or was written over, so its copies are refused; "
                f"run `manage.py prepare_traceable {revision.repo.repo_id} --revision {revision.commit}` to write "
                "it again as recorded",
            )


def audit_chain() -> Iterator[Finding]:
    found = breaks()
    for problem in found:
        yield Finding(False, f"audit log: {problem}")
    if not found:
        yield Finding(True, f"the audit chain is intact against its anchors ({AuditEvent.objects.count()} events)")


def keys() -> Iterator[Finding]:
    """The signing key, where this host holds one, loads and is the one registered; the public keys parse."""
    registered = {key.fingerprint for key in SigningKey.objects.all()}
    if settings.SIGNING_KEY:
        try:
            own = fingerprint(public_pem(load_private_key()))
        except SigningUnavailable as error:
            yield Finding(False, f"the signing key does not load: {error}")
            return
        if registered and own not in registered:
            yield Finding(False, "SIGNING_KEY is not a key that signed any release here: is it this deployment's?")
            return
        yield Finding(True, "the signing key loads and is the registered one")
    else:
        yield Finding(True, f"no signing key on this host (workers hold it); {len(registered)} public key(s) on record")
