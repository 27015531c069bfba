"""Forgetting where requests came from: after AUDIT_ORIGIN_RETENTION_DAYS the address and user agent
of every recorded event (audit events, download events) are erased; what happened, and by whom, stays."""

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.utils import timezone

from audit.models import Recorded


def recorded_models() -> list:
    """Every concrete model that keeps a request's origin, whichever app defines it."""
    return [model for model in apps.get_models() if issubclass(model, Recorded)]


def erase_old_origins(now=None) -> dict[str, int]:
    """Erase ip and user_agent on events older than the retention period; how many rows, per model."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AUDIT_ORIGIN_RETENTION_DAYS)
    erased = {}
    for model in recorded_models():
        remembered = model.objects.filter(created_at__lt=cutoff).exclude(ip__isnull=True, user_agent="")
        # Past AuditEvent's append-only save() on purpose: its chain covers origin_digest, a keyed hash, not these.
        erased[model._meta.label] = remembered.update(ip=None, user_agent="")
    return erased
