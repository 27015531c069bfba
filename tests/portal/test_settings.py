"""Settings from the environment: bad values are refused by name, misconfiguration is explained."""

import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_choice, env_int, env_rate, env_str, env_url
from tests.support.commands import manage
from tests.support.servers import versioned_bucket


@pytest.mark.parametrize(
    ("reader", "value", "message"),
    [
        (lambda: env_bool("WG_TEST"), "maybe", "WG_TEST='maybe' is not a boolean"),
        (lambda: env_int("WG_TEST", 1), "ten", "WG_TEST='ten' is not a whole number"),
        (lambda: env_int("WG_TEST", 1, minimum=5), "3", "below the minimum of 5"),
        (lambda: env_url("WG_TEST", schemes=("postgres",)), "mysql://x/y", "must start with one of postgres://"),
        (lambda: env_choice("WG_TEST", "a", choices=("a", "b")), "c", "is not one of: a, b"),
        (lambda: env_rate("WG_TEST", "1/1"), "600 per minute", "write COUNT/SECONDS"),
    ],
)
def test_readers_refuse_bad_values_naming_the_variable(monkeypatch, reader, value, message):
    monkeypatch.setenv("WG_TEST", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reader()


def test_readers_accept_good_values_and_secrets_from_files(monkeypatch, tmp_path):
    monkeypatch.setenv("WG_FLAG", "Yes")
    monkeypatch.setenv("WG_COUNT", "42")
    assert env_bool("WG_FLAG") is True and env_int("WG_COUNT", 0) == 42
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("WG_SECRET", raising=False)
    monkeypatch.setenv("WG_SECRET_FILE", str(secret))
    assert env_str("WG_SECRET") == "from-a-file"
    monkeypatch.setenv("WG_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(ImproperlyConfigured, match=r"WG_SECRET_FILE=.* cannot be read"):
        env_str("WG_SECRET")


def test_a_half_configured_s3_is_an_error_that_says_what_is_missing(tmp_path):
    result = manage("check", env={"S3_BUCKET": "weights"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "weightgate.E001" in result.stderr
    assert "S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY not set" in result.stderr


def test_a_malformed_value_stops_start_up_with_its_name(tmp_path):
    result = manage("check", env={"DATABASE_URL": "mysql://db/weights"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL must start with one of sqlite://, postgres://, postgresql://" in result.stderr


def test_check_deploy_lists_the_embedded_defaults_to_replace(tmp_path):
    result = manage("check", "--deploy", env={}, tmp_path=tmp_path)
    for code in ("W001", "W002", "W003", "W004", "W005", "W006", "W007", "W008"):
        assert f"weightgate.{code}" in result.stderr
    assert "security.W" not in result.stderr


def test_check_deploy_is_quiet_when_production_settings_are_set(tmp_path, s3_endpoint):
    production = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://weightgate@db.internal:5432/weightgate",
        "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
        # The one part --deploy asks: a real endpoint, with a bucket that keeps versions (W009 otherwise).
        **s3_endpoint.env(),
        "S3_BUCKET": versioned_bucket(s3_endpoint),
        "EMAIL_HOST": "smtp.internal",
        "HTTPS": "1",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
        "ALLOWED_HOSTS": "weights.example.org",
        "AUDIT_CHAIN_KEY": secrets.token_urlsafe(50),
        "TRACE_KEY": secrets.token_hex(32),
        "SIGNING_KEY": ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode(),
    }
    result = manage("check", "--deploy", env=production, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PUBLISH_CONCURRENCY", "0", "PUBLISH_CONCURRENCY=0 is below the minimum of 1"),
        ("PUBLISH_CONCURRENCY", "many", "PUBLISH_CONCURRENCY='many' is not a whole number"),
        ("PUBLISH_STALE_SECONDS", "1", "PUBLISH_STALE_SECONDS=1 is below the minimum of 2"),
    ],
)
def test_publishing_settings_refuse_bad_values_by_name(tmp_path, variable, value, message):
    result = manage("check", env={variable: value}, tmp_path=tmp_path)
    assert result.returncode != 0 and message in result.stderr
