import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils import timezone


class User(AbstractUser):
    email = models.EmailField(unique=True)
    email_verified_at = models.DateTimeField(null=True, blank=True)

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


class GatingPolicy(models.Model):
    """How a repo decides who gets access; created with safe defaults the first time it is needed."""

    class Mode(models.TextChoices):
        MANUAL = "manual", "a reviewer decides"
        AUTOMATIC = "automatic", "every complete request is accepted"

    repo = models.OneToOneField("distribution.Repo", on_delete=models.CASCADE, related_name="policy")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.MANUAL)
    license_text = models.TextField(blank=True)
    license_version = models.CharField(max_length=32, default="1")

    def __str__(self):
        return f"{self.repo} ({self.mode})"

    @classmethod
    def for_repo(cls, repo) -> "GatingPolicy":
        policy, _ = cls.objects.get_or_create(repo=repo)
        return policy


class AccessRequest(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_requests")
    repo = models.ForeignKey("distribution.Repo", on_delete=models.CASCADE, related_name="access_requests")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    fields = models.JSONField(default=dict, blank=True)
    license_version = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rejection_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One open request per person and repo; decided ones stay as history.
            models.UniqueConstraint(
                fields=["user", "repo"], condition=Q(state="pending"), name="one_pending_request_per_repo"
            )
        ]

    def __str__(self):
        return f"{self.user} -> {self.repo} ({self.state})"


class Grant(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grants")
    repo = models.ForeignKey("distribution.Repo", on_delete=models.CASCADE, related_name="grants")
    request = models.ForeignKey(AccessRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "repo"], condition=Q(revoked_at__isnull=True), name="one_live_grant_per_repo"
            )
        ]

    def __str__(self):
        return f"{self.user} may download {self.repo}"

    @classmethod
    def active(cls):
        now = timezone.now()
        return cls.objects.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class Reviewer(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_of")
    repo = models.ForeignKey("distribution.Repo", on_delete=models.CASCADE, related_name="reviewers")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "repo"], name="reviewer_unique")]

    def __str__(self):
        return f"{self.user} reviews {self.repo}"


def hash_token(raw: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    PREFIX = "wg_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    # The first characters, so a person can tell their tokens apart without the secret.
    hint = models.CharField(max_length=12)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def issue(cls, user, name: str) -> tuple["ApiToken", str]:
        """Create a token; the raw secret is returned once and never stored."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, digest=hash_token(raw), hint=raw[:10])
        return token, raw
