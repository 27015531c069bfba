"""The audit trail's rows: events on a hash chain, and the one head every writer locks.

These models belong to the `portal` app for Django (its migrations made their tables, and
`portal.models` imports them), while their code lives here, in the bottom layer, so that every
domain can write to the trail without importing the portal above it.
"""

import functools
import hashlib
import hmac
import ipaddress
import json

from django.conf import settings
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils import timezone

GENESIS = "0" * 64


class UnknownChainKey(Exception):
    """An event was chained with a key that is neither AUDIT_CHAIN_KEY nor one of its fallbacks."""


def keyed_digest(text: str, secret: str | None = None) -> str:
    """HMAC-SHA256 under SECRET_KEY: tells equal values apart from others without keeping them."""
    return hmac.new((secret or settings.SECRET_KEY).encode(), text.encode(), hashlib.sha256).hexdigest()


def key_id(key: str) -> str:
    """A short public name for a chain key, stored on each event so the key can be rotated."""
    return hashlib.sha256(b"weightgate audit chain key\n" + key.encode()).hexdigest()[:16]


@functools.cache
def chain_keys() -> dict[str, bytes]:
    """The audit chain's keys by id: AUDIT_CHAIN_KEY first (it chains new events), then its fallbacks."""
    keys = [settings.AUDIT_CHAIN_KEY, *settings.AUDIT_CHAIN_KEY_FALLBACKS]
    return {key_id(key): key.encode() for key in keys}


def current_chain_key() -> str:
    return next(iter(chain_keys()))


@receiver(setting_changed)
def _forget_chain_keys(setting, **kwargs):
    if setting.startswith("AUDIT_CHAIN_KEY"):
        chain_keys.cache_clear()


def normalized_address(address: str | None) -> str | None:
    """The address as the database gives it back (`::1`, not `0:0::1`), so its digest verifies later."""
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


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
            "ip": normalized_address(request.META.get("REMOTE_ADDR")),
            "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],  # META: no headers dict built
        }


class AuditEvent(Recorded):
    """One change, append-only: who did what to whom, when and from where.

    Tags read `subject:object:action` (`access:request:accepted`). Copies of names beside the
    foreign keys keep the history readable after a user or repo is deleted.
    """

    # Tamper evidence: each event's hash covers the previous event's hash and its own content.
    sequence = models.BigIntegerField(unique=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # The id of the key whose HMAC chained this event; empty for events chained before keys (plain sha256).
    chain_key = models.CharField(max_length=16, blank=True)
    # The chain covers a keyed hash of the address and agent, so they can be erased after the
    # retention period without breaking it.
    origin_digest = models.CharField(max_length=64, blank=True)
    tag = models.CharField(max_length=80, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_username = models.CharField(max_length=150, blank=True)  # empty: the system (a rule, a job)
    subject_username = models.CharField(max_length=150, blank=True)
    repo_id = models.CharField(max_length=200, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta(Recorded.Meta):
        app_label = "portal"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.tag} by {self.actor_username or 'system'}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")

    def canonical(self) -> bytes:
        content = {
            "sequence": self.sequence,
            "tag": self.tag,
            "actor": self.actor_username,
            "subject": self.subject_username,
            "repo": self.repo_id,
            "data": self.data,
            "origin": self.origin_digest,
            "at": self.created_at.isoformat(),
        }
        return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()

    def compute_hash(self) -> str:
        message = self.previous_hash.encode() + self.canonical()
        if not self.chain_key:
            return hashlib.sha256(message).hexdigest()  # chained before the chain was keyed
        try:
            key = chain_keys()[self.chain_key]
        except KeyError:
            raise UnknownChainKey(
                f"event {self.sequence} was chained with key {self.chain_key}, which is neither AUDIT_CHAIN_KEY "
                "nor in AUDIT_CHAIN_KEY_FALLBACKS: add the old key to the fallbacks"
            ) from None
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def digest_origin(ip, user_agent, secret: str | None = None) -> str:
        if not ip and not user_agent:
            return ""
        return keyed_digest(f"{ip or ''}\n{user_agent or ''}", secret)

    def origin_matches(self) -> bool:
        """Whether the address and agent kept beside the chain are the ones its digest covers (erased ones
        are; SECRET_KEY's fallbacks count, as the digest may predate a rotation)."""
        if not self.ip and not self.user_agent:
            return True
        return any(
            hmac.compare_digest(self.digest_origin(self.ip, self.user_agent, secret), self.origin_digest)
            for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
        )


class AuditChainHead(models.Model):
    """The one row every writer locks to append, so concurrent writers never fork the chain."""

    sequence = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS)

    class Meta:
        app_label = "portal"

    def __str__(self):
        return f"audit chain at {self.sequence}"
