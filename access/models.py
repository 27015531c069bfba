import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.functional import cached_property


class User(AbstractUser):
    email = models.EmailField(unique=True)

    @property
    def email_verified(self) -> bool:
        """Whether the person opened the link sent to their address (allauth keeps that record)."""
        from allauth.account.models import EmailAddress  # allauth's models need this user model loaded first

        return EmailAddress.objects.filter(user=self, email__iexact=self.email, verified=True).exists()

    def mark_email_verified(self) -> None:
        """For accounts made by operators (`create_account --verified`) rather than by sign-up."""
        from allauth.account.models import EmailAddress

        EmailAddress.objects.filter(user=self).exclude(email__iexact=self.email).update(primary=False)
        EmailAddress.objects.update_or_create(user=self, email=self.email, defaults={"verified": True, "primary": True})


FIELD_TYPES = ("text", "long_text", "checkbox", "date", "country", "select")


def validate_form_fields(value) -> None:
    """The request form: a list of {"name", "label", "type", "required", "options"} entries."""
    if not isinstance(value, list):
        raise ValidationError("the form must be a list of fields")
    names = set()
    for field in value:
        if not isinstance(field, dict) or not isinstance(field.get("name"), str) or not field["name"].isidentifier():
            raise ValidationError(f"each field needs a name made of letters, digits and _: {field!r}")
        if field["name"] in names:
            raise ValidationError(f"two fields are named {field['name']!r}")
        names.add(field["name"])
        if field.get("type") not in FIELD_TYPES:
            raise ValidationError(f"field {field['name']!r}: type must be one of {', '.join(FIELD_TYPES)}")
        if field["type"] == "select" and not (isinstance(field.get("options"), list) and field["options"]):
            raise ValidationError(f"field {field['name']!r}: a select needs a list of options")


class GatingPolicy(models.Model):
    """How a repo decides who gets access; created with safe defaults the first time it is needed."""

    class Mode(models.TextChoices):
        MANUAL = "manual", "a reviewer decides"
        AUTOMATIC = "automatic", "every complete request is accepted"
        RULES = "rules", "rules decide; what no rule settles goes to a reviewer"

    repo = models.OneToOneField("distribution.Repo", on_delete=models.CASCADE, related_name="policy")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.MANUAL)
    form_fields = models.JSONField(default=list, blank=True, validators=[validate_form_fields])
    license_text = models.TextField(blank=True)
    # A new version makes every grantee accept the license again before their next download.
    license_version = models.CharField(max_length=32, default="1")
    acceptable_use = models.TextField(blank=True)
    # How long a rejected applicant waits before asking again.
    reapply_cooldown_days = models.PositiveIntegerField(default=30)

    def __str__(self):
        return f"{self.repo} ({self.mode})"

    @classmethod
    def for_repo(cls, repo) -> "GatingPolicy":
        policy, _ = cls.objects.get_or_create(repo=repo)
        return policy


class AccessRule(models.Model):
    """One rule of a repo in `rules` mode, tried in order on each new request; the first match decides."""

    class Kind(models.TextChoices):
        EMAIL_DOMAIN_IN = "email_domain_in", "the applicant's email domain is one of"
        COUNTRY_IN = "country_in", "the answered country is one of"
        FIELD_MISSING = "field_missing", "this field is left empty"

    class Action(models.TextChoices):
        ACCEPT = "accept"
        REJECT = "reject"
        REVIEW = "review", "leave it to a reviewer"

    policy = models.ForeignKey(GatingPolicy, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # Domains or ISO 3166 codes for the *_in kinds, one field name for field_missing.
    values = models.JSONField(default=list)
    action = models.CharField(max_length=8, choices=Action.choices)
    reason = models.CharField(max_length=300, blank=True, help_text="shown to the applicant on rejection")

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return f"{self.get_kind_display()} {self.values} -> {self.action}"


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
    # When the periodic job recorded that expires_at passed, so each expiry is recorded once.
    expiry_recorded_at = models.DateTimeField(null=True, blank=True, editable=False)
    license_version = models.CharField(max_length=32, blank=True)
    # Optional caps: how many times each file of a revision may be fetched whole, and bytes a day.
    max_complete_downloads = models.PositiveIntegerField(null=True, blank=True)
    max_bytes_per_day = models.PositiveBigIntegerField(null=True, blank=True)

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
    class Notify(models.TextChoices):
        IMMEDIATELY = "immediately", "an email for each new request"
        DAILY = "daily", "one digest a day"
        NEVER = "never"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_of")
    repo = models.ForeignKey("distribution.Repo", on_delete=models.CASCADE, related_name="reviewers")
    notify = models.CharField(max_length=12, choices=Notify.choices, default=Notify.IMMEDIATELY)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "repo"], name="reviewer_unique")]

    def __str__(self):
        return f"{self.user} reviews {self.repo}"


class Publisher(models.Model):
    """Someone staff named to add revisions to a repo (through a token with the publish scope)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="publisher_of")
    repo = models.ForeignKey("distribution.Repo", on_delete=models.CASCADE, related_name="publishers")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "repo"], name="publisher_unique")]

    def __str__(self):
        return f"{self.user} publishes to {self.repo}"


def hash_token(raw: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class Scope(models.TextChoices):
    """What a token may do for its owner; a scope never gives more than the owner has."""

    READ = "read", "read: download what you have access to"
    REVIEW = "review", "review: decide access requests on the repos you review"
    PUBLISH = "publish", "publish: add revisions to the repos you publish to"
    ADMIN = "admin", "admin: staff powers (every repo, unreleased revisions, the whole audit)"


def default_scopes() -> list[str]:
    return [Scope.READ.value]


def validate_scopes(value) -> None:
    if not isinstance(value, list) or not value or not set(value) <= set(Scope.values):
        raise ValidationError(f"scopes must be a non-empty list of: {', '.join(Scope.values)}")


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
    scopes = models.JSONField(default=default_scopes, validators=[validate_scopes])
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: the token never expires")
    # False limits the token to `repos`: with none left (say all were deleted) it reaches no repo at all.
    all_repos = models.BooleanField(default=True)
    repos = models.ManyToManyField("distribution.Repo", blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def issue(cls, user, name: str, *, scopes=(Scope.READ,), expires_at=None, repos=None) -> tuple["ApiToken", str]:
        """Create a token; the raw secret is returned once and never stored. `repos`: None for every repo."""
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user,
            name=name,
            digest=hash_token(raw),
            hint=raw[:10],
            scopes=sorted({Scope(scope).value for scope in scopes}),
            expires_at=expires_at,
            all_repos=repos is None,
        )
        if repos is not None:
            token.repos.set(repos)
        return token, raw

    def expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @cached_property
    def repo_ids(self) -> frozenset[int] | None:
        """The ids of the repos the token is limited to, None when it reaches every repo (read once)."""
        return None if self.all_repos else frozenset(self.repos.values_list("pk", flat=True))
