from django.db import models
from django.utils import timezone


class VerificationRun(models.Model):
    """One pass of the checks over a revision: at publish time, or again later (`reverify`)."""

    class Kind(models.TextChoices):
        PUBLISH = "publish"
        REVERIFY = "reverify"

    revision = models.ForeignKey("distribution.Revision", on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PUBLISH)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True)
    # Per-file digests, per-tensor statistics and what the smoke pass saw, to compare with the next revision.
    report = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return (
            f"{self.kind} run of {self.revision} ({'ok' if self.ok else 'failed' if self.ok is False else 'running'})"
        )


class CheckResult(models.Model):
    """One finding of a verification run on a revision, shown to publishers and staff."""

    class Status(models.TextChoices):
        PASS = "pass"
        WARN = "warn"
        FAIL = "fail"

    revision = models.ForeignKey("distribution.Revision", on_delete=models.CASCADE, related_name="checks")
    run = models.ForeignKey(VerificationRun, on_delete=models.CASCADE, related_name="checks")
    name = models.CharField(max_length=40)
    status = models.CharField(max_length=8, choices=Status.choices)
    code = models.CharField(max_length=60)
    file = models.CharField(max_length=512, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.status} {self.name}/{self.code} {self.file}"


class SigningKey(models.Model):
    """A public key that has signed releases. Kept after rotation so older signatures stay checkable."""

    # sha256 of the public key's PEM: the `hint` model-signing writes into every signature.
    fingerprint = models.CharField(max_length=64, unique=True)
    public_pem = models.TextField()
    first_used_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_used_at", "-id"]

    def __str__(self):
        return f"signing key {self.fingerprint[:16]}{' (retired)' if self.retired_at else ''}"


class FileCheck(models.Model):
    """One file of a revision, checked by whichever verify worker claims it: its digest, header and
    tensor scan, stored as soon as that file is done, so a worker that dies costs only its own file."""

    class State(models.TextChoices):
        PENDING = "pending"
        CHECKING = "checking"
        DONE = "done"

    revision = models.ForeignKey("distribution.Revision", on_delete=models.CASCADE, related_name="file_checks")
    path = models.CharField(max_length=512)
    size = models.BigIntegerField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    # The worker holding the file writes this; one silent for VERIFY_STALE_SECONDS has died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # How many times a worker took the file: 1, and once more for each worker that died holding it.
    claims = models.PositiveIntegerField(default=0)
    checked_by = models.CharField(max_length=200, blank=True)  # the worker, for the operator
    sha256 = models.CharField(max_length=64, blank=True)
    # The S3 VersionId of the object read: blank where the bucket keeps none, or for a check reused from a copy.
    version_id = models.CharField(max_length=1024, blank=True)
    # The file's FileScan (verification.core.scan), from which the whole checkpoint is judged.
    scan = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["revision", "path"], name="one_check_per_file")]

    def __str__(self):
        return f"{self.path} of {self.revision} ({self.state})"
