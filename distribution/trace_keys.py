"""The master keys of traceable copies, from settings: TRACE_KEY marks new revisions; it and the keys in
TRACE_KEY_FALLBACKS serve and trace the copies issued under them (each revision records its key's id)."""

import functools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from tracing.keys import TraceKey, TraceKeyError


@functools.cache
def keys() -> dict[str, TraceKey]:
    """Every configured key by its id, the current one first."""
    found = {}
    for name, text in [("TRACE_KEY", settings.TRACE_KEY)] + [
        ("TRACE_KEY_FALLBACKS", t) for t in settings.TRACE_KEY_FALLBACKS
    ]:
        try:
            key = TraceKey.from_text(text)
        except TraceKeyError as error:
            raise ImproperlyConfigured(f"{name}: {error}") from None
        found.setdefault(key.key_id, key)
    return found


def current() -> TraceKey:
    return next(iter(keys().values()))


def by_id(key_id: str) -> TraceKey:
    """The key a revision was marked with; LookupError (saying what to do) once it is configured no more."""
    try:
        return keys()[key_id]
    except KeyError:
        raise LookupError(
            f"trace key {key_id} is not configured: put it back in TRACE_KEY_FALLBACKS to serve and trace "
            "the copies issued under it"
        ) from None


@receiver(setting_changed)
def _forget_keys(setting, **kwargs):
    if setting in ("TRACE_KEY", "TRACE_KEY_FALLBACKS"):
        keys.cache_clear()
