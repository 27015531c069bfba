"""The keys that sign releases: the configured or generated private key, and the registry of public
keys that have signed (kept after a rotation, so older signatures stay checkable). The bundle format
itself is verification.core.signature."""

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from verification.core.signature import fingerprint, public_pem
from verification.models import SigningKey


class SigningUnavailable(Exception):
    """The configured signing key cannot be used; says how to fix it."""


def load_private_key(*, generate: bool = True) -> ec.EllipticCurvePrivateKey:
    """The portal's signing key: configured (SIGNING_KEY[_FILE]) or, by default, made once under var/
    (unless `generate` is off: then SigningUnavailable when there is none yet)."""
    if settings.SIGNING_KEY:
        pem, origin = settings.SIGNING_KEY.encode(), "SIGNING_KEY (or SIGNING_KEY_FILE)"
    else:
        path = settings.SIGNING_KEY_GENERATED_PATH
        if not path.exists():
            if not generate:
                raise SigningUnavailable(f"SIGNING_KEY is unset and no key was generated at {path}")
            generate_key_file(path)
        pem, origin = path.read_bytes(), str(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise SigningUnavailable(f"{origin} is not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningUnavailable(
            f"{origin} must be an EC P-256 key (openssl ecparam -name prime256v1 -genkey -noout -out key.pem)"
        )
    return key


def generate_key_file(path) -> None:
    """Write a new P-256 private key readable only by this user, replacing the file atomically."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    partial.replace(path)


def current_key(*, generate: bool = True):
    """(private key, its SigningKey row); a new key is registered and the ones before it retired."""
    private_key = load_private_key(generate=generate)
    pem = public_pem(private_key)
    with transaction.atomic():
        row, created = SigningKey.objects.get_or_create(
            fingerprint=fingerprint(pem), defaults={"public_pem": pem.decode()}
        )
        if created or row.retired_at is not None:
            SigningKey.objects.exclude(pk=row.pk).filter(retired_at__isnull=True).update(retired_at=timezone.now())
            SigningKey.objects.filter(pk=row.pk).update(retired_at=None)
    return private_key, row


def rotate_generated_key():
    """Replace the key made under var/ with a new one; releases signed before keep their signatures."""
    if settings.SIGNING_KEY:
        raise ImproperlyConfigured(
            "the signing key comes from SIGNING_KEY (or SIGNING_KEY_FILE): put the new key there and restart; "
            "it is registered, and the old one retired, at the next signature"
        )
    generate_key_file(settings.SIGNING_KEY_GENERATED_PATH)
    return current_key()[1]
