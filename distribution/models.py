import contextlib
import re
import threading

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone

from audit.chain import record
from audit.models import Recorded
from audit.tags import Tag

# Hugging Face's rule for the two halves of a repo id, so every id we accept works in its client.
REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# First path segments the portal uses itself; a repo org may not take one of them.
RESERVED_ORGS = frozenset(
    {"api", "admin", "account", "accounts", "audit", "files", "static", "repos", "health", "review", "requests", "dl"}
)


def validate_repo_part(value: str) -> None:
    if not REPO_PART.match(value) or ".." in value or "--" in value:
        raise ValidationError(
            f"{value!r} is not a valid repo name part: use letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, at most 96 characters"
        )


TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_tag(tag: str) -> None:
    if not TAG_PATTERN.match(tag) or tag == "main" or re.fullmatch(r"[0-9a-f]{40}", tag):
        raise ValidationError(
            f"{tag!r} cannot name a revision: use up to 64 letters, digits, '.', '_' or '-', not 'main' nor a commit id"
        )


def validate_tag_for(revision: "Revision", tag: str) -> None:
    """Refuse a tag that cannot name `revision`: one no client could ask for, or another revision's of its repo."""
    validate_tag(tag)
    if revision.repo.revisions.filter(tag=tag).exclude(pk=revision.pk).exists():
        raise ValidationError(f"{revision.repo.repo_id} already has a revision tagged {tag}: choose another name")


def parse_repo_id(repo_id: str) -> tuple[str, str]:
    """Split 'org/name', refusing anything the Hugging Face client could not address."""
    org, slash, name = repo_id.partition("/")
    if not slash or "/" in name:
        raise ValidationError(f"{repo_id!r} is not a repo id: write it as ORG/NAME")
    validate_repo_part(org)
    validate_repo_part(name)
    if org.lower() in RESERVED_ORGS:
        raise ValidationError(f"{org!r} is reserved by the portal and cannot be an organisation name")
    return org, name


@contextlib.contextmanager
def beating(touch, *, every: float, name: str):
    """Call `touch()` every `every` seconds from a side thread while the block runs: a claim's sign of life."""
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(every):
                touch()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Repo(models.Model):
    org = models.CharField(max_length=96, validators=[validate_repo_part])
    name = models.CharField(max_length=96, validators=[validate_repo_part])
    # A private repo is invisible to everyone but staff and its reviewers: not even its existence leaks.
    private = models.BooleanField(default=False)
    gated = models.BooleanField(default=True)
    # Model code (Python files, a config's auto_map) runs on every recipient's machine under
    # trust_remote_code: refused at verification unless staff allow it for this repo.
    allows_code = models.BooleanField(default=False)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Download links (manifest, download.sh): how long they live and how many requests they serve.
    link_lifetime_hours = models.PositiveIntegerField(default=24)
    link_max_uses = models.PositiveIntegerField(default=100)
    # Every recipient gets a copy of its own, marked so that a leak names them (tracing/, README
    # "Traceable copies"); revisions verified while this is on are served that way.
    traceable = models.BooleanField(
        default=False, help_text="serve each grantee a marked copy, so that a leaked copy names its recipient"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="repo_unique_id")]
        ordering = ["org", "name"]

    def __str__(self):
        return self.repo_id

    @property
    def repo_id(self) -> str:
        return f"{self.org}/{self.name}"

    @classmethod
    def by_id(cls, repo_id: str) -> "Repo":
        """The repo named ORG/NAME; LookupError (with what to do) when there is none."""
        org, _, name = repo_id.partition("/")
        repo = cls.objects.filter(org=org, name=name).first()
        if repo is None:
            raise LookupError(f"no repo {repo_id}: publish a checkpoint to it first")
        return repo

    def revision_by_prefix(self, prefix: str) -> "Revision":
        """The one revision whose commit starts with `prefix` (7 characters at least)."""
        if len(prefix) < 7:
            raise LookupError("give at least 7 characters of the revision id")
        matches = list(self.revisions.filter(commit__startswith=prefix.lower())[:2])
        if len(matches) != 1:
            raise LookupError(f"{self.repo_id} has {'no' if not matches else 'more than one'} revision {prefix}")
        return matches[0]

    def latest_released(self):
        return self.revisions.filter(state=Revision.State.RELEASED).order_by("-released_at", "-id").first()


class Revision(models.Model):
    class State(models.TextChoices):
        # Files still going into storage (distribution.publishing): never verified, listed or served.
        DRAFT = "draft"
        # Every file stored, but the checkpoint names files it lacks (an index's shards, which a later
        # commit brings): it waits for them, never verified, released or served, and never failed.
        INCOMPLETE = "incomplete"
        # Committed by the Hub client, but files it sent by Xet are still being rebuilt from their xorbs by a
        # worker (distribution.xet.assemble): never verified, listed or served; it becomes uploaded (or
        # incomplete) once each is accepted as its sha256, failed when one is refused.
        ASSEMBLING = "assembling"
        UPLOADED = "uploaded"
        VERIFYING = "verifying"
        VERIFIED = "verified"
        FAILED = "failed"
        RELEASED = "released"
        WITHDRAWN = "withdrawn"

    class Stage(models.TextChoices):
        """Where a `verifying` revision is: its files checked (each by any verify worker), the checks of
        the whole checkpoint, waiting for a GPU worker, or the smoke pass."""

        NONE = ""
        CHECKS = "checks"
        JUDGING = "judging"
        SMOKE_QUEUED = "smoke-queued"
        SMOKE = "smoke"

    # The only moves a revision may make; states never go back. A re-verification that fails
    # moves a verified revision to failed and a released one to withdrawn; a newer Hub commit fails
    # the verification of an older one that is still waiting or running (superseded).
    TRANSITIONS = {
        State.DRAFT: {State.UPLOADED, State.INCOMPLETE, State.ASSEMBLING},
        State.INCOMPLETE: set(),
        State.ASSEMBLING: {State.UPLOADED, State.INCOMPLETE, State.FAILED},
        State.UPLOADED: {State.VERIFYING, State.FAILED},
        State.VERIFYING: {State.VERIFIED, State.FAILED},
        State.VERIFIED: {State.RELEASED, State.FAILED},
        State.FAILED: set(),
        State.RELEASED: {State.WITHDRAWN},
        State.WITHDRAWN: set(),
    }
    # The audit event each move leaves; entering verification is a worker's claim, not a decision.
    TRANSITION_TAGS = {
        State.VERIFIED: Tag.REVISION_VERIFIED,
        State.FAILED: Tag.REVISION_FAILED,
        State.RELEASED: Tag.REVISION_RELEASED,
        State.WITHDRAWN: Tag.REVISION_WITHDRAWN,
    }

    repo = models.ForeignKey(Repo, on_delete=models.PROTECT, related_name="revisions")
    # A 40-hex id, as the Hugging Face client expects a commit to look.
    commit = models.CharField(max_length=40, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.UPLOADED)
    # Where the files live; each revision keeps its backend when the default changes.
    storage_backend = models.CharField(max_length=8)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    verification_started_at = models.DateTimeField(null=True, blank=True)
    verification_stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.NONE, blank=True)
    # Written every few seconds by the worker holding the revision; a stale one means the worker died.
    verification_heartbeat_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    # A name people can ask for instead of the commit (revision="v1.0" in the Hugging Face client).
    tag = models.CharField(max_length=64, blank=True)
    # A draft's source: a digest of its storage and of each file's path, size and modification time,
    # by which a rerun of publish_checkpoint on the same files finds it, and the host:directory it came from.
    draft_key = models.CharField(max_length=64, blank=True, db_index=True)
    draft_source = models.CharField(max_length=1024, blank=True)
    # Written every few seconds by the publish holding a draft; a silent one means that publish died.
    publish_heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["repo", "tag"], condition=~models.Q(tag=""), name="revision_unique_tag")
        ]

    def __str__(self):
        return f"{self.repo.repo_id}@{self.commit[:12]}"

    @property
    def storage_prefix(self) -> str:
        return f"repos/{self.repo.org}/{self.repo.name}/{self.commit}"

    def heartbeat(self, field: str, *, while_state: str, every: float):
        """Write the time into `field` every `every` seconds from a side thread, while the revision is
        in `while_state`: the sign of life of the process holding it (a publish, a verification stage)."""
        alive = Revision.objects.filter(pk=self.pk, state=while_state)
        return beating(lambda: alive.update(**{field: timezone.now()}), every=every, name=f"heartbeat-{self.pk}")

    def move(self, to_state: str, *, actor=None, request=None, **fields) -> bool:
        """Move to `to_state` only from a state that allows it; return whether this call did it.

        The conditional update makes the move safe when several workers race for the same row, and
        only the call that made the move writes its audit event (with `request`'s address and agent).
        """
        sources = [state for state, targets in self.TRANSITIONS.items() if to_state in targets]
        with transaction.atomic():
            changed = Revision.objects.filter(pk=self.pk, state__in=sources).update(state=to_state, **fields)
            if changed and to_state in self.TRANSITION_TAGS:
                details = {"reason": fields.get("failure_reason"), "revision_tag": fields.get("tag")}
                details = {name: value for name, value in details.items() if value}
                record(
                    self.TRANSITION_TAGS[to_state],
                    actor=actor,
                    repo=self.repo,
                    request=request,
                    commit=self.commit,
                    **details,
                )
        if changed:
            self.refresh_from_db()
        return bool(changed)


class RevisionFile(models.Model):
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=512)
    size = models.BigIntegerField()
    # Filled in by verification; a file is never served before it is known.
    sha256 = models.CharField(max_length=64, blank=True)
    # What publishing knows of the copy it stored: the storage's tag for it (S3's ETag; none for
    # local files), so a resumed publish tells its own finished copies from anything else, and the
    # sha256 it computed on the way (only when checking the publisher's digests).
    stored_etag = models.CharField(max_length=128, blank=True)
    upload_sha256 = models.CharField(max_length=64, blank=True)
    # Where the bytes are when they are not under the revision's prefix: a Hub commit refers to an accepted
    # upload, or to the same file of an earlier revision, where it is (both immutable from then on) instead
    # of copying it; `stored_etag` is then the version referred to, which reads insist on.
    object_key = models.CharField(max_length=512, blank=True)
    # The S3 VersionId verification read, in a bucket that keeps versions: download links name it, so bytes
    # written over the key later (whatever their ETag) are never served as this file. Blank elsewhere.
    stored_version = models.CharField(max_length=1024, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["revision", "path"], name="revision_file_unique_path")]
        indexes = [
            # The daily job asks, of each old upload, whether a file refers to it.
            models.Index(fields=["object_key"], condition=~models.Q(object_key=""), name="revision_file_by_object")
        ]
        ordering = ["path"]

    def __str__(self):
        return f"{self.revision}:{self.path}"

    @property
    def storage_key(self) -> str:
        return self.object_key or f"{self.revision.storage_prefix}/{self.path}"

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class LfsObject(models.Model):
    """A file a publisher's Hub client uploads by the LFS batch API, before a commit names it: staged under
    `key`, never listed or served. It is `accepted` only once the portal has read it back and its sha256
    is the oid it was announced with; a commit's files refer to accepted objects where they are
    (RevisionFile.object_key), so from then on their bytes are a revision's and are never deleted."""

    class State(models.TextChoices):
        PENDING = "pending"
        # Sent by Xet and named by a shard: a worker rebuilds it from the repo's xorbs (`xet_terms`), then
        # accepts it as its oid or deletes it.
        ASSEMBLING = "assembling"
        ACCEPTED = "accepted"

    repo = models.ForeignKey(Repo, on_delete=models.CASCADE, related_name="lfs_objects")
    oid = models.CharField(max_length=64)  # the sha256 the client announced
    size = models.BigIntegerField()
    storage_backend = models.CharField(max_length=8)
    key = models.CharField(max_length=512, unique=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    upload_id = models.CharField(max_length=1024, blank=True)  # S3's multipart upload, while one is open
    part_size = models.BigIntegerField(null=True, blank=True)  # the parts' size, for a multipart transfer
    etag = models.CharField(max_length=128, blank=True)  # the accepted version's S3 ETag: reads insist on it
    head = models.BinaryField(blank=True, default=b"")  # the first bytes, by which a commit judges its kind
    xet_terms = models.BinaryField(blank=True, default=b"")  # an assembling file's chunk ranges (xet_formats)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["repo", "oid"], name="lfs_object_by_oid")]

    def __str__(self):
        return f"{self.repo.repo_id} LFS object {self.oid[:12]} ({self.state})"


class XetXorb(models.Model):
    """A xorb (compressed chunks) a publisher's Hub client uploaded by Xet to a repo, stored under `key`. Never
    served: a shard naming its chunk ranges rebuilds files from it into accepted LFS objects."""

    repo = models.ForeignKey(Repo, on_delete=models.CASCADE, related_name="xet_xorbs")
    hash = models.CharField(max_length=64)  # as the client names it in the upload path
    size = models.BigIntegerField()
    storage_backend = models.CharField(max_length=8)
    key = models.CharField(max_length=512)
    # Per chunk, its hash, byte range in the xorb and size (xet_formats.RECORD, 44 bytes): what a dedup
    # answer lists, kept in one value since a large checkpoint has millions of chunks.
    chunks = models.BinaryField(default=b"")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["repo", "storage_backend", "hash"], name="one_xorb_per_hash_and_storage")
        ]

    def __str__(self):
        return f"{self.repo.repo_id} xorb {self.hash[:12]}"


class XetDedupChunk(models.Model):
    """A chunk of a repo's xorb that a Hub client may ask the dedup query about: one the Xet specification
    makes global-dedup eligible, the first of a xorb, or the first of a file a shard recorded."""

    repo = models.ForeignKey(Repo, on_delete=models.CASCADE, related_name="+")
    xorb = models.ForeignKey(XetXorb, on_delete=models.CASCADE, related_name="dedup_chunks")
    hash = models.CharField(max_length=64)
    index = models.PositiveIntegerField()  # of the chunk in its xorb

    class Meta:
        indexes = [models.Index(fields=["repo", "hash"], name="xet_dedup_chunk_lookup")]
        constraints = [models.UniqueConstraint(fields=["xorb", "index"], name="one_dedup_entry_per_chunk")]

    def __str__(self):
        return f"chunk {self.hash[:12]} of {self.xorb}"


class TracedRevision(models.Model):
    """The served layout of a traceable revision, written and verified once by a worker before release:
    each carrier-holding shard rewritten with its carriers last (tracing.served) under `storage_prefix`.

    What tracing a copy needs is recorded here, so changing the defaults never breaks tracing old copies:
    the carriers of each file, the id of the key that marks them and the scheme. `files` gives each served
    base's size, shared prefix and sha256."""

    revision = models.OneToOneField(Revision, on_delete=models.CASCADE, related_name="traced")
    scheme = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32)
    carriers = models.JSONField()  # {path: [tensor name, ...]}, only the files that hold some
    files = models.JSONField()  # {path: {"size": int, "prefix_size": int, "sha256": str}}
    prepared_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"served layout of {self.revision}"

    @property
    def storage_prefix(self) -> str:
        return f"traced/{self.revision.storage_prefix}"

    def storage_key(self, path: str) -> str:
        return f"{self.storage_prefix}/{path}"


class TracedCopy(models.Model):
    """One recipient's copy of a traceable revision: made at the grant's first download of it, with the
    digest and size of every file as that recipient receives it and the model.sig signed over them."""

    revision = models.ForeignKey(Revision, on_delete=models.PROTECT, related_name="copies")
    grant = models.ForeignKey("access.Grant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)  # kept when the account is gone
    # The id the marks are keyed by, with the repo and revision (tracing.keys.CopyKeys.code): "grant-N" or "user-N".
    recipient = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32)
    scheme = models.CharField(max_length=64)
    files = models.JSONField()  # {path: {"sha256": str, "size": int}}, every file of the revision
    signature = models.BinaryField()  # this copy's model.sig
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "grant"], condition=models.Q(grant__isnull=False), name="traced_copy_per_grant"
            ),
            models.UniqueConstraint(
                fields=["revision", "user"], condition=models.Q(grant__isnull=True), name="traced_copy_per_user"
            ),
        ]

    def __str__(self):
        return f"copy of {self.revision} for {self.username}"


class DownloadTicket(models.Model):
    """A download link a grantee can hand to curl or wget: signed, expiring, limited in uses, and
    good only while the grant is active and the revision released."""

    key = models.CharField(max_length=43, unique=True)  # random; the link carries it signed
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    grant = models.ForeignKey("access.Grant", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="tickets")
    file = models.ForeignKey(RevisionFile, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField()
    uses = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        scope = self.file.path if self.file_id else "every file"
        return f"link for {self.user} to {self.revision} ({scope}) until {self.expires_at:%Y-%m-%d %H:%M}"


class DownloadEvent(Recorded):
    """One request that served bytes or redirected to them: who obtained which file, when, from where."""

    class Channel(models.TextChoices):
        LOCAL = "local", "served by the portal"
        S3_REDIRECT = "s3-redirect", "redirected to object storage"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Copies that keep the history readable after the user or repo rows are gone.
    username = models.CharField(max_length=150)
    repo_id = models.CharField(max_length=200)
    grant = models.ForeignKey("access.Grant", null=True, on_delete=models.SET_NULL, related_name="+")
    token = models.ForeignKey("access.ApiToken", null=True, on_delete=models.SET_NULL, related_name="+")
    ticket = models.ForeignKey(DownloadTicket, null=True, on_delete=models.SET_NULL, related_name="+")
    revision = models.ForeignKey(Revision, null=True, on_delete=models.SET_NULL, related_name="+")
    commit = models.CharField(max_length=40)
    file = models.ForeignKey(RevisionFile, null=True, on_delete=models.SET_NULL, related_name="+")
    path = models.CharField(max_length=512)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    range_requested = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    bytes_expected = models.BigIntegerField(null=True)
    # Null until known: a redirected download never passes through the portal.
    bytes_served = models.BigIntegerField(null=True)
    # Set on events that went through the spool (distribution.downloads.spool), so shipping one twice stores it once.
    spool_key = models.CharField(max_length=32, null=True, unique=True, editable=False)  # noqa: DJ001  (unique: "" would clash)

    class Meta(Recorded.Meta):
        indexes = [
            # The audit report (portal.reports) reads a repo's events from this index alone, in the
            # order it groups them: no table access and no sort, even over millions of events.
            models.Index(
                fields=["repo_id", "username", "revision_id", "file_id"],
                include=["status", "created_at", "range_requested", "bytes_served", "bytes_expected"],
                name="download_audit_by_repo",
            ),
            models.Index(fields=["username", "created_at"], name="download_by_username"),
        ]

    def __str__(self):
        return f"{self.username or 'anonymous'} {self.status} {self.repo_id}@{self.commit[:12]}/{self.path}"
