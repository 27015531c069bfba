"""Publishing: copy a checkpoint directory into storage and record it as a Revision to be verified."""

import logging
import os
import re
import secrets
import stat
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.chain import record
from audit.tags import Tag
from distribution.models import Repo, Revision, RevisionFile, parse_repo_id
from distribution.storage import StorageError, get_storage
from verification.core.signature import SIGNATURE_PATH
from verification.outcomes import missing_or_failed_checks

log = logging.getLogger(__name__)


class PublishError(Exception):
    """The checkpoint cannot be published as given; the message says what to change."""


def discard_copies(storage, prefix: str) -> None:
    """Remove what a failed publish copied; a cleanup failure is logged, the original error stands."""
    try:
        storage.delete_prefix(prefix)
    except StorageError as error:
        log.warning("could not remove %s from %s storage after a failed publish: %s", prefix, storage.name, error)


# File names that travel unchanged through URLs, shell scripts and SHA256SUMS lines.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._+=@-]+(/[A-Za-z0-9._+=@-]+)*$")


def checkpoint_files(directory: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, absolute path) for every file, refusing links and special files."""
    files = []
    for folder, subdirs, names in os.walk(directory, followlinks=False):
        for name in sorted(subdirs + names):
            path = Path(folder) / name
            relative = path.relative_to(directory).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise PublishError(f"{relative} is a symbolic link: copy the file itself into {directory}")
            if stat.S_ISREG(mode):
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
                files.append((relative, path))
            elif not stat.S_ISDIR(mode):
                raise PublishError(f"{relative} is not a regular file")
    return sorted(files)


def publish_checkpoint(directory, repo_id: str, *, publisher=None, storage_backend: str | None = None) -> Revision:
    """Copy every file of `directory` into storage and record it as a revision waiting for verification
    (the caller queues it: `verification.tasks.verify_revision`).

    Creates the repo when it does not exist (gated, manual approval). Nothing is recorded unless
    every file was copied; a failed copy removes what was copied.
    """
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

    commit = secrets.token_hex(20)
    prefix = f"repos/{org}/{name}/{commit}"
    sizes = {}
    try:
        for relative, path in files:
            storage.put_file(f"{prefix}/{relative}", path)
            sizes[relative] = path.stat().st_size
    except (OSError, StorageError) as error:
        discard_copies(storage, prefix)
        raise PublishError(f"copying into {storage.name} storage failed, nothing was published: {error}") from None

    try:
        with transaction.atomic():
            repo, _ = Repo.objects.get_or_create(org=org, name=name)
            revision = Revision.objects.create(
                repo=repo, commit=commit, storage_backend=storage.name, published_by=publisher
            )
            RevisionFile.objects.bulk_create(
                RevisionFile(revision=revision, path=relative, size=size) for relative, size in sizes.items()
            )
            record(
                Tag.REVISION_PUBLISHED,
                actor=publisher,
                repo=repo,
                commit=commit,
                storage=storage.name,
                files=len(sizes),
                bytes=sum(sizes.values()),
            )
    except Exception:
        discard_copies(storage, prefix)
        raise
    return revision


def release_revision(revision: Revision, *, actor=None, tag: str = "") -> Revision:
    """Release a verified revision whose every required check ran and passed; `tag` names it for clients."""
    if revision.state == Revision.State.RELEASED:
        if tag and revision.tag != tag:
            Revision.objects.filter(pk=revision.pk).update(tag=tag)
            record(
                Tag.REVISION_TAGGED,
                actor=actor,
                repo=revision.repo,
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
    named = {"tag": tag} if tag else {}
    if not revision.move(Revision.State.RELEASED, actor=actor, released_at=timezone.now(), **named):
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} is {revision.state}, not verified: "
            "only a verified revision can be released"
            + (f" ({revision.failure_reason})" if revision.failure_reason else "")
        )
    return revision


def withdraw_revision(revision: Revision, *, reason: str, actor=None) -> Revision:
    """Stop every download of a released revision: the Hub API, links and tickets the portal issued
    (each request checks the state again), and, in every web process, the fast path's remembered
    decisions (within DOWNLOAD_DECISION_SECONDS; at once in this process)."""
    reason = reason.strip()
    if not reason:
        raise PublishError("give a reason: it is recorded and shown to staff")
    if not revision.move(Revision.State.WITHDRAWN, actor=actor, withdrawn_at=timezone.now(), failure_reason=reason):
        raise PublishError(
            f"revision {revision.commit} of {revision.repo.repo_id} is {revision.state}: only a released revision "
            "is withdrawn (one that is not released serves nothing)"
        )
    return revision
