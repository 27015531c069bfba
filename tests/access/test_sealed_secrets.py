"""Second-factor secrets are sealed in the database: a copy of it (or of a backup) holds no TOTP key and
no recovery-code seed in the clear, yet every code still works; secrets stored before sealing are
sealed by the migration; a SECRET_KEY moved to the fallbacks still opens them."""

import importlib

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from access.sealed_secrets import SEALED
from tests.support.personas import enrol_second_factor, person, recovery_codes, totp_code

pytestmark = pytest.mark.django_db
migration = importlib.import_module("access.migrations.0008_seal_second_factor_secrets")


def raw_data(authenticator: Authenticator) -> str:
    """The row as a dump of the database shows it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT data FROM mfa_authenticator WHERE id = %s", [authenticator.pk])
        return str(cursor.fetchone()[0])


def test_an_enrolled_second_factor_is_sealed_at_rest_and_its_codes_work():
    user = person("stan", staff=True)
    secret = enrol_second_factor(user)
    totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    codes = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    assert totp.data["secret"].startswith(SEALED) and secret not in raw_data(totp)
    assert codes.data["seed"].startswith(SEALED)
    assert TOTP(totp).validate_code(totp_code(secret))
    unused = recovery_codes(user)
    assert len(unused) == 10 and not any(code in raw_data(codes) for code in unused)
    assert RecoveryCodes(codes).validate_code(unused[0])
    assert not RecoveryCodes(Authenticator.objects.get(pk=codes.pk)).validate_code(unused[0])  # used once


def test_the_migration_seals_secrets_stored_in_the_clear_and_codes_keep_working():
    user = person("olga", staff=True)
    secret = generate_totp_secret()
    plain = Authenticator.objects.create(user=user, type=Authenticator.Type.TOTP, data={"secret": secret})
    seed = "ab" * 20
    kept = Authenticator.objects.create(
        user=user, type=Authenticator.Type.RECOVERY_CODES, data={"seed": seed, "used_mask": 0}
    )
    before = RecoveryCodes(kept).get_unused_codes()
    assert TOTP(plain).validate_code(totp_code(secret))  # read as stored before the migration
    migration.seal_stored(apps, None)
    plain.refresh_from_db()
    kept.refresh_from_db()
    assert plain.data["secret"].startswith(SEALED) and secret not in raw_data(plain)
    assert kept.data["seed"].startswith(SEALED) and seed not in raw_data(kept)
    assert TOTP(plain).validate_code(totp_code(secret, steps=1))
    assert RecoveryCodes(kept).get_unused_codes() == before
    migration.seal_stored(apps, None)  # run twice (a migration replayed): sealed once
    assert Authenticator.objects.get(pk=plain.pk).data == plain.data
    migration.unseal_stored(apps, None)
    assert Authenticator.objects.get(pk=plain.pk).data["secret"] == secret


def test_a_rotated_secret_key_still_opens_what_it_sealed_and_a_lost_one_says_what_to_do(settings):
    user = person("rita", staff=True)
    secret = enrol_second_factor(user)
    totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a new key " * 5, [old_key]
    assert TOTP(totp).validate_code(totp_code(secret))
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(ImproperlyConfigured, match="reset_second_factor USERNAME"):
        TOTP(totp).validate_code(totp_code(secret, steps=1))
