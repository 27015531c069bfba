"""Second-factor secrets sealed in the database: an authenticator app's TOTP key and the recovery codes'
seed are stored encrypted (Fernet: AES-128-CBC with an HMAC), under a key derived from SECRET_KEY, so a
copy of the database or one of its backups gives nobody the codes of staff, reviewers or publishers.

A secret stored before sealing (plain base32 or hex) is still read, and sealed by the migration that
introduced this; a SECRET_KEY moved to SECRET_KEY_FALLBACKS still opens what it sealed."""

import base64

from allauth.mfa.adapter import DefaultMFAAdapter
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SEALED = "sealed:v1:"


def fernet_for(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"weightgate second-factor secrets")
    return Fernet(base64.urlsafe_b64encode(derived.derive(secret_key.encode())))


def sealer() -> MultiFernet:
    """Seals with SECRET_KEY; opens with it or any of SECRET_KEY_FALLBACKS."""
    return MultiFernet([fernet_for(key) for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]])


def seal(text: str) -> str:
    if text.startswith(SEALED):
        return text
    return SEALED + sealer().encrypt(text.encode()).decode("ascii")


def unseal(stored: str) -> str:
    if not stored.startswith(SEALED):
        return stored  # stored before sealing: the migration seals it
    try:
        return sealer().decrypt(stored[len(SEALED) :].encode("ascii")).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a second-factor secret cannot be opened with SECRET_KEY or SECRET_KEY_FALLBACKS: put the key it was "
            "sealed with back in SECRET_KEY_FALLBACKS, or reset that person's second factor "
            "(`manage.py reset_second_factor USERNAME`)"
        ) from None


class SealedSecretsAdapter(DefaultMFAAdapter):
    """allauth's second factors, with their secrets sealed at rest."""

    def encrypt(self, text: str) -> str:
        return seal(text)

    def decrypt(self, encrypted_text: str) -> str:
        return unseal(encrypted_text)
