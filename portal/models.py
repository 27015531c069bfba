from django.conf import settings
from django.db import models
from django.utils import timezone


class Recorded(models.Model):
    """Where and when a recorded request came from: shared by audit and download events."""

    ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    @staticmethod
    def origin(request) -> dict:
        if request is None:
            return {}
        return {
            "ip": request.META.get("REMOTE_ADDR") or None,
            "user_agent": request.headers.get("User-Agent", "")[:512],
        }


class AuditEvent(Recorded):
    """One change, append-only: who did what to whom, when and from where.

    Tags read `subject:object:action` (`access:request:accepted`). Copies of names beside the
    foreign keys keep the history readable after a user or repo is deleted.
    """

    tag = models.CharField(max_length=80, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_username = models.CharField(max_length=150, blank=True)  # empty: the system (a rule, a job)
    subject_username = models.CharField(max_length=150, blank=True)
    repo_id = models.CharField(max_length=200, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.tag} by {self.actor_username or 'system'}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")
