"""Start-up checks that say what is misconfigured and how to fix it.

`manage.py check --deploy` adds the warnings a production deployment must act on: the embedded
defaults (SQLite, a filesystem broker, console email, a generated key) are for one machine only.
"""

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def storage_is_configured(app_configs, **kwargs):
    problems = []
    s3_values = {
        "S3_BUCKET": settings.S3_BUCKET,
        "S3_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
    }
    if settings.STORAGE_BACKEND == "s3" or any(s3_values.values()):
        missing = [name for name, value in s3_values.items() if not value]
        if missing:
            problems.append(
                Error(
                    f"S3 storage is half configured: {', '.join(missing)} not set",
                    hint="Set S3_BUCKET, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (and S3_ENDPOINT_URL for a "
                    "non-AWS endpoint), or unset them all to keep files under LOCAL_STORAGE_ROOT.",
                    id="weightgate.E001",
                )
            )
    root = settings.LOCAL_STORAGE_ROOT
    probe = root if root.exists() else root.parent
    if not os.access(probe, os.W_OK):
        problems.append(
            Error(
                f"LOCAL_STORAGE_ROOT {root} is not writable by this process",
                hint="Point LOCAL_STORAGE_ROOT at a directory this user can write, or fix its permissions.",
                id="weightgate.E002",
            )
        )
    if settings.SIGNING_KEY:
        from verification.signing import SigningUnavailable, load_private_key

        try:
            load_private_key()
        except SigningUnavailable as error:
            problems.append(
                Error(
                    f"the release-signing key cannot be used: {error}",
                    hint="Set SIGNING_KEY_FILE to an unencrypted PEM file holding an EC P-256 private key, or unset "
                    "SIGNING_KEY and SIGNING_KEY_FILE to use a key generated under var/.",
                    id="weightgate.E003",
                )
            )
    return problems


@register(Tags.security, deploy=True)
def production_parts_are_set(app_configs, **kwargs):
    embedded_defaults = [
        (
            settings.SECRET_KEY_IS_GENERATED,
            "W001",
            "SECRET_KEY is generated into var/secret_key",
            "Set SECRET_KEY (or SECRET_KEY_FILE) from your secret store, the same on every server and worker.",
        ),
        (
            settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
            "W002",
            "the database is SQLite",
            "Set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME.",
        ),
        (
            settings.CELERY_BROKER_URL.startswith("filesystem"),
            "W003",
            "the Celery broker is the local filesystem, which only works on one machine",
            "Set CELERY_BROKER_URL=redis://HOST:6379/0.",
        ),
        (
            settings.EMAIL_BACKEND.endswith("console.EmailBackend"),
            "W004",
            "email is printed to the console, so nobody receives verification links",
            "Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD).",
        ),
        (
            not settings.SIGNING_KEY,
            "W006",
            "SIGNING_KEY is unset: each worker signs releases with a key it generates under its own var/",
            "Set SIGNING_KEY_FILE to the same EC P-256 private key on every worker that runs the smoke pass "
            "(queue gpu), and on web hosts too when a repo is traceable (each copy's model.sig is signed as it "
            "is issued).",
        ),
        (
            settings.AUDIT_CHAIN_KEY_IS_GENERATED,
            "W007",
            "AUDIT_CHAIN_KEY is generated into var/audit-chain-key: each host would chain with a key of its own",
            "Set AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) from your secret store, the same on every web host and "
            "worker, and keep it out of the database's backups; put a replaced key in AUDIT_CHAIN_KEY_FALLBACKS.",
        ),
        (
            settings.TRACE_KEY_IS_GENERATED,
            "W008",
            "TRACE_KEY is generated into var/trace-key: each host would mark and trace copies with a key of its own",
            "Set TRACE_KEY (or TRACE_KEY_FILE; 32 random bytes as hex) from your secret store, the same on every web "
            "host and worker, and never in the database; put a replaced key in TRACE_KEY_FALLBACKS.",
        ),
        (
            not settings.HTTPS,
            "W005",
            "HTTPS is off: cookies are sent in clear and no HSTS is set",
            "Terminate TLS in front of the portal and set HTTPS=1 (turns on secure cookies, HSTS, redirects).",
        ),
    ]
    return [
        Warning(message, hint=hint, id=f"weightgate.{code}")
        for applies, code, message, hint in embedded_defaults
        if applies
    ]


@register(Tags.security, deploy=True)
def bucket_keeps_versions(app_configs, **kwargs):
    """Asks the bucket (only under --deploy): a presigned link names the version checked only where S3 keeps
    versions; elsewhere it fetches whatever its key holds when it is used."""
    from distribution.storage import StorageError, get_storage, s3_configured

    if not s3_configured():
        return []
    storage = get_storage("s3")
    hint = (
        f"Turn versioning on (aws s3api put-bucket-versioning --bucket {storage.bucket} --versioning-configuration "
        "Status=Enabled) and add a lifecycle rule that expires noncurrent versions after a few days."
    )
    try:
        status = storage.versioning()
    except StorageError as error:
        asked = f"could not ask S3 whether the bucket keeps versions: {error}"
        return [Warning(asked, hint=hint, id="weightgate.W009")]
    if status == "Enabled":
        return []
    return [
        Warning(
            f"S3 bucket {storage.bucket} does not keep versions (versioning {status.lower() or 'never turned on'}): "
            "a download link fetches whatever its key holds when it is used, so bytes written over a released file "
            "while a link lives go out unverified, and a file written over cannot be served at all",
            hint=hint,
            id="weightgate.W009",
        )
    ]
