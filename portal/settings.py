"""Weightgate settings, read from the environment.

With nothing set, everything runs on one machine: SQLite and files under `var/`, a Celery
broker on the filesystem, email printed to the console. `DATABASE_URL`, `CELERY_BROKER_URL`,
`S3_*` and `EMAIL_HOST` switch to production parts; see README.md for the full list.
"""

import contextlib
import os
import secrets
from pathlib import Path

import dj_database_url

from machine.cpus import usable_cpus
from portal.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_proxies,
    env_rate,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# pytest sets PYTEST_VERSION: the suite keeps its database, files and broker apart from `make run`'s.
VAR_DIR = Path(env_str("WEIGHTGATE_VAR_DIR", str(BASE_DIR / ("var/test" if "PYTEST_VERSION" in os.environ else "var"))))
VAR_DIR = VAR_DIR.resolve()


def _generated_secret(name: str, file_name: str) -> tuple[str, bool]:
    """The configured secret `name`, or one generated once into var/`file_name` for the embedded default."""
    configured = env_str(name)
    if configured:
        return configured, False
    key_file = VAR_DIR / file_name
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: processes starting together (web, worker) share one key.
        partial = VAR_DIR / f"{file_name}.{os.getpid()}.partial"
        partial.write_text(secrets.token_urlsafe(50))
        partial.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(partial, key_file)
        partial.unlink()
    return key_file.read_text().strip(), True


SECRET_KEY, SECRET_KEY_IS_GENERATED = _generated_secret("SECRET_KEY", "secret_key")
# Keys the audit chain's HMAC: never in the database, so a person who can write to it cannot recompute
# the chain after an edit. The same on every web host and worker; old keys stay in the fallbacks.
AUDIT_CHAIN_KEY, AUDIT_CHAIN_KEY_IS_GENERATED = _generated_secret("AUDIT_CHAIN_KEY", "audit-chain-key")
AUDIT_CHAIN_KEY_FALLBACKS = env_list("AUDIT_CHAIN_KEY_FALLBACKS")
# How often a worker signs the chain's head and stores the statement beside the checkpoints.
AUDIT_ANCHOR_SECONDS = env_int("AUDIT_ANCHOR_SECONDS", 3600, minimum=60)
# The EC P-256 key that signs releases (PEM): SIGNING_KEY or SIGNING_KEY_FILE in production, else made once in var/.
SIGNING_KEY = env_str("SIGNING_KEY")
SIGNING_KEY_GENERATED_PATH = VAR_DIR / "signing-key.pem"
# The master key of traceable copies (tracing.keys): every recipient's marks derive from it. Never in the
# database; TRACE_KEY or TRACE_KEY_FILE in production (hex or base64, 32 bytes at least), else made once in
# var/. A replaced key goes to TRACE_KEY_FALLBACKS: copies issued under it are served and traced with it.
TRACE_KEY, TRACE_KEY_IS_GENERATED = _generated_secret("TRACE_KEY", "trace-key")
TRACE_KEY_FALLBACKS = env_list("TRACE_KEY_FALLBACKS")
# The share of a shard's weights that may carry marks (tracing.carriers.MAX_FRACTION), in thousandths.
TRACE_CARRIER_PERMILLE = env_int("TRACE_CARRIER_PERMILLE", 70, minimum=1, maximum=1000)
# The memory each web process gives the served bases of traceable files it keeps ready (their carriers'
# marks, about twice their tails): past it the least recently used are let go, and opened again when asked.
TRACE_SERVED_BASES_MB = env_int("TRACE_SERVED_BASES_MB", 512, minimum=1)
# Old keys keep verifying signed links and sessions after a rotation; the first key signs.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
DEBUG = env_bool("DEBUG", False)
# The proxies in front (a count, or their address ranges), whose X-Forwarded-For entries are believed;
# with none, the address the request came from is the client's (hub/clients.py).
TRUSTED_PROXIES = env_proxies("TRUSTED_PROXIES")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
PUBLIC_URL = env_url("PUBLIC_URL", schemes=("http", "https")).rstrip("/")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # the admin, behind the second factor staff sign in with
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # portal first: its templates (the allauth layout among them) take precedence
    "portal.apps.PortalConfig",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_countries",
    "access.apps.AccessConfig",
    "distribution.apps.DistributionConfig",
    "verification.apps.VerificationConfig",
    "workers.apps.WorkersConfig",
    "mail.apps.MailConfig",
]

MIDDLEWARE = [
    # /livez and /readyz: answered whatever the Host and before the HTTPS redirect (probes use addresses)
    "portal.probes.ProbeMiddleware",
    "hub.request_ids.RequestIdMiddleware",  # next: every line logged while answering carries the id
    "hub.metrics.RequestMetricsMiddleware",
    "hub.clients.ClientAddressMiddleware",  # every later reader sees the client's own address
    "hub.nul.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "distribution.downloads.fast_path.RepeatedRedirectMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "hub.errors.UnavailableMiddleware",  # last: its process_exception sees a view's exception first
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
AUTH_USER_MODEL = "access.User"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# --- Accounts (django-allauth) ----------------------------------------------------------------
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
# No access request before the address is verified: a sign-up must open the link it is sent.
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Weightgate] "
ACCOUNT_ADAPTER = "mail.account_adapter.QueuedMailAdapter"  # its mail leaves by the mail task too
# Per IP and per account: sign-up, password reset, and a lock-out after repeated failed logins.
ACCOUNT_RATE_LIMITS = {
    "signup": env_str("RATE_LIMIT_SIGNUP", "10/m/ip"),
    "login_failed": env_str("RATE_LIMIT_LOGIN_FAILED", "10/m/ip,5/5m/key"),
    "reset_password": env_str("RATE_LIMIT_RESET_PASSWORD", "10/m/ip,3/m/key"),
    "reset_password_from_key": "20/m/ip",
    "confirm_email": "1/3m/key",
}
ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS = 3
# The second factor staff and reviewers must pass before the review queue, the admin and the audit
# pages (access.gate.check_second_factor): an authenticator app (TOTP) and single-use recovery codes.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_ADAPTER = "access.sealed_secrets.SealedSecretsAdapter"  # their secrets encrypted in the database
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Weightgate")
# One 30-second step either side of the server's clock, for phones whose clocks drift (RFC 6238 5.2);
# allauth refuses a code used once for the whole window.
MFA_TOTP_TOLERANCE = 1

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{VAR_DIR / 'weightgate.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql"),
)
# A connection kept between requests (DATABASE_CONN_MAX_AGE seconds) is checked before each request
# reuses it: one the server dropped meanwhile (a restart, a failover) is replaced, not used.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker are separate processes: wait for the write lock, don't fail.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    # Tests share the database with a worker process, so it must be a file, not memory.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-weightgate.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Storage of checkpoint files ----------------------------------------------------------------
LOCAL_STORAGE_ROOT = Path(env_str("LOCAL_STORAGE_ROOT", str(VAR_DIR / "storage"))).resolve()
S3_ENDPOINT_URL = env_url("S3_ENDPOINT_URL", schemes=("http", "https"))
S3_BUCKET = env_str("S3_BUCKET")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY")
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_ADDRESSING_STYLE = env_choice("S3_ADDRESSING_STYLE", "path", choices=("path", "virtual"))
# Files at least this large go up in parts, so a failed part is retried instead of the file.
S3_MULTIPART_THRESHOLD = env_int("S3_MULTIPART_THRESHOLD", 64 * 1024 * 1024, minimum=5 * 1024 * 1024)
# How many files, and parts of large files, publish_checkpoint sends at once (each part is held in memory).
PUBLISH_CONCURRENCY = env_int("PUBLISH_CONCURRENCY", 8, minimum=1, maximum=64)
# A publish holding a draft writes a heartbeat; one silent this long is taken as dead and may be resumed.
PUBLISH_STALE_SECONDS = env_int("PUBLISH_STALE_SECONDS", 60, minimum=2)
# A draft not finished this many days after it began is discarded by a daily job: its copies and its
# unfinished multipart uploads, which would otherwise stay in the bucket for good.
PUBLISH_DRAFT_DAYS = env_int("PUBLISH_DRAFT_DAYS", 7, minimum=1)
# The Xet access token a publisher's Hub client is given for uploads: short, since the client asks again
# for a new one before it runs out (and checks whoever asks, each time).
XET_TOKEN_SECONDS = env_int("XET_TOKEN_SECONDS", 3600, minimum=300, maximum=24 * 3600)
# Uploaded xorbs are kept this long for later uploads whose shards name them (the client remembers what it
# sent), then deleted by the daily job: what a shard rebuilt from them is kept as accepted files.
XET_XORB_DAYS = env_int("XET_XORB_DAYS", 7, minimum=1)
STORAGE_BACKEND = env_choice("STORAGE_BACKEND", "s3" if S3_BUCKET else "local", choices=("local", "s3"))
# The entries of one page of a repo tree listing, as the Hub pages it (the client follows the Link header).
HUB_TREE_PAGE_SIZE = env_int("HUB_TREE_PAGE_SIZE", 1000, minimum=1)
# Requests per token (or account, or address) on the download endpoints: "COUNT/SECONDS".
DOWNLOAD_RATE_LIMIT = env_rate("DOWNLOAD_RATE_LIMIT", "600/60")
# With a front server (nginx) in front of local storage, the portal checks access and the front
# server sends the bytes: the internal location that maps to LOCAL_STORAGE_ROOT, e.g. /protected/.
X_ACCEL_REDIRECT_PREFIX = env_str("X_ACCEL_REDIRECT_PREFIX")
# How long the URL a download is redirected to stays valid (presigned S3 URL or local ticket).
DOWNLOAD_REDIRECT_SECONDS = env_int("DOWNLOAD_REDIRECT_SECONDS", 600, minimum=1, maximum=7 * 24 * 3600)
# For a grant with caps, each presigned link is counted, so it lives only long enough to start its
# transfer (S3 checks the expiry when a transfer starts, not while it runs).
CAPPED_LINK_SECONDS = env_int("CAPPED_LINK_SECONDS", 10, minimum=1, maximum=600)
# How long a process answers a token's repeated redirect to object storage from the checks it made
# the first time (distribution.downloads.fast_path); 0 checks everything on every request. A change to grants,
# tokens, revisions or accounts clears it at once in the process that made it, in the others after
# at most this long (links already handed out stay valid for DOWNLOAD_REDIRECT_SECONDS anyway).
# The suite checks every request fully unless a test turns this on (tests/distribution/test_fast_path.py): most
# tests count a download's events the moment it is answered, and the spool stores them a moment later.
DOWNLOAD_DECISION_SECONDS = env_int(
    "DOWNLOAD_DECISION_SECONDS", 0 if "PYTEST_VERSION" in os.environ else 2, minimum=0, maximum=60
)
# The fast path's download events go to a file per process first, stored in the database this often.
DOWNLOAD_SPOOL_DIR = Path(env_str("DOWNLOAD_SPOOL_DIR", str(VAR_DIR / "spool")))
DOWNLOAD_SPOOL_FLUSH_SECONDS = env_int("DOWNLOAD_SPOOL_FLUSH_MS", 250, minimum=10, maximum=60_000) / 1000

# --- Audit -------------------------------------------------------------------------------------
# Days the address and user agent of audit and download events are kept; a daily job erases older ones.
AUDIT_ORIGIN_RETENTION_DAYS = env_int("AUDIT_ORIGIN_RETENTION_DAYS", 90, minimum=1)

# --- Celery ------------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", "filesystem://", schemes=("filesystem", "redis", "rediss"))
# The longest task (verification of a large checkpoint) must finish before Redis re-delivers it.
VERIFY_TIME_LIMIT_SECONDS = env_int("VERIFY_TIME_LIMIT_SECONDS", 3 * 3600, minimum=60)
# A worker holding a revision writes a heartbeat this often; one silent for VERIFY_STALE_SECONDS is dead.
VERIFY_HEARTBEAT_SECONDS = env_int("VERIFY_HEARTBEAT_SECONDS", 10, minimum=1)
VERIFY_STALE_SECONDS = env_int("VERIFY_STALE_SECONDS", 120, minimum=2)
# How often the periodic job looks for revisions stuck in verification.
REQUEUE_STUCK_EVERY_SECONDS = env_int("REQUEUE_STUCK_EVERY_SECONDS", 300, minimum=1)
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's filesystem transport, but a worker never takes a message still being written.
    CELERY_BROKER_TRANSPORT = "workers.embedded_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        # An idle worker looks for messages this often (kombu's default, 1 s, is paid at every stage,
        # one task per file included); a look is one directory listing.
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": VERIFY_TIME_LIMIT_SECONDS + 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's own default is os.cpu_count(): the host's cores, whatever the container or unit's CPU quota.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", usable_cpus(), minimum=1)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues, routes and the periodic jobs: workers/celery.py.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The queues /readyz wants at least one worker answering on (verify,gpu,default in production). None
# by default: the embedded filesystem broker cannot carry the question to its worker.
READY_QUEUES = env_list("READY_QUEUES")

# --- Email ---------------------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Weightgate <weightgate@localhost>")
# Mail leaves through a Celery task (queue `mail`): an SMTP server that fails is tried again after
# MAIL_RETRY_SECONDS, doubling up to MAIL_RETRY_MAX_SECONDS, MAIL_MAX_RETRIES times (about two days).
MAIL_RETRY_SECONDS = env_int("MAIL_RETRY_SECONDS", 30, minimum=1)
MAIL_RETRY_MAX_SECONDS = env_int("MAIL_RETRY_MAX_SECONDS", 1800, minimum=1)
MAIL_MAX_RETRIES = env_int("MAIL_MAX_RETRIES", 100, minimum=0)

# --- HTTPS behind a proxy ---------------------------------------------------------------------
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    # Whether every subdomain is HTTPS-only, and preload-listed, is the deployment's own decision.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Cache (rate limits, throttles): shared by every process ---------------------------------------
CACHE_URL = env_url("CACHE_URL", schemes=("redis", "rediss"))
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    # Files, so the web server's processes and the worker count the same attempts.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- API -----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The throttles read REMOTE_ADDR, which ClientAddressMiddleware set; never the raw X-Forwarded-For.
    "NUM_PROXIES": 0,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.tokens.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "access-request-user": env_str("RATE_LIMIT_ACCESS_REQUEST_USER", "10/hour"),
        "access-request-ip": env_str("RATE_LIMIT_ACCESS_REQUEST_IP", "30/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Weightgate API",
    "DESCRIPTION": "Access requests, grants and monitoring for a self-hosted model-weights portal.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.openapi.add_plain_views",  # the API's plain Django views: downloads and signing keys
    ],
}

# --- The rest ------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start when it is missing
LOG_LEVEL = env_choice("LOG_LEVEL", "info", choices=("debug", "info", "warning", "error"))
# /metrics answers a bearer METRICS_TOKEN, or these addresses (after TRUSTED_PROXIES is applied).
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_ADDRESSES = env_networks("METRICS_ALLOWED_ADDRESSES", "127.0.0.1,::1")
# prometheus_client writes its files there from the first metric made: a worker or a manage.py command
# sharing the environment file must find the directory, not only gunicorn (which empties it at start).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# text for people (`make run`), json for a log pipeline: one object per line, with the request id.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", choices=("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "hub.log_lines.RequestIdFilter"}},
    "formatters": {
        "text": {
            "()": "hub.log_lines.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        },
        "json": {"()": "hub.log_lines.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL.upper()},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
# Workers write their lines through the same handler, so LOG_FORMAT and the redaction apply to them too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if not HTTPS:
    # weightgate.W005 says the one thing to do about all four: terminate TLS and set HTTPS=1.
    SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008", "security.W012", "security.W016"]
