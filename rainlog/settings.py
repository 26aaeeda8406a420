"""rainlog settings: one module, read from the environment (and an optional .env file).

Only this module reads os.environ. Every variable is listed in README.md ("Configuration").
A variable that is set but does not parse stops startup with a message naming it.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from botocore.config import Config as BotoConfig
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

load_dotenv(os.environ.get("RAINLOG_ENV_FILE", BASE_DIR / ".env"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off."
    )


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below its minimum of {minimum}.")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below its minimum of {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from None
    return os.environ.get(name, default)


def env_url(name: str, default: str = "") -> str:
    raw = os.environ.get(name, default).strip()
    if raw and not urlparse(raw).scheme:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a URL (it needs a scheme such as https://)."
        )
    return raw


# --- Core --------------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
# Where the embedded defaults keep their data: the SQLite file, hour files, the local archive.
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE) to a long random string, "
            "or set DEBUG=1 for a development run (`make run` writes a development .env)."
        )
    SECRET_KEY = "insecure-development-key-only-for-debug-runs"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_url("SITE_URL", "http://localhost:8000")

INSTALLED_APPS = [
    # The admin with the fleet dashboard as its index (rainlog/admin.py).
    "rainlog.apps.RainlogAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and ReDoc assets served by the project, not fetched from a CDN.
    "drf_spectacular_sidecar",
    # Before django_q: its `qcluster` command is ingestion's (one that stops within seconds).
    "ingestion",
    "django_q",
    # Login throttling and lockout on every sign-in (docs/security.md, "Sign-in lockout").
    "axes",
    "users",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "rainlog.content_security.ApiPagesPolicyMiddleware",
    # Last: it turns a sign-in refused during a lockout into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "rainlog.urls"
WSGI_APPLICATION = "rainlog.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database ----------------------------------------------------------------------------------
# SQLite is only the embedded default for a first run; production and the test suite use PostgreSQL.

DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{VAR_DIR / 'rainlog.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} cannot be parsed: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static ------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
# django-axes first: it refuses a sign-in from a locked-out address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LANGUAGE_CODE = "en-us"
# Times are written one way everywhere in the admin: 2026-12-03 15:59:00 UTC.
FORMAT_MODULE_PATH = ["rainlog.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Security (clean `check --deploy` when DEBUG is off) ---------------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Reverse proxies in front of rainlog that append the client's address to X-Forwarded-For.
# 0: the address is REMOTE_ADDR and X-Forwarded-For is ignored (a client can write anything there).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Only these script, style, image and font sources: no inline script, no other site.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
if not DEBUG and SECURE_HSTS_SECONDS == 0:
    # An operator who turned HSTS off on purpose: say so to `check --deploy` readers.
    SILENCED_SYSTEM_CHECKS = ["security.W004"]

# --- Encryption of EAGLE passwords -------------------------------------------------------------
# A comma-separated list of Fernet keys: the first encrypts, all decrypt (key rotation:
# prepend a new key, run `manage.py reencrypt_secrets`, then drop the old key).

FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS", [])
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS is not set. Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    # A fixed development key so that a DEBUG run can read what it wrote before.
    FIELD_ENCRYPTION_KEYS = ["ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZC11c2U="]

# --- REST API ----------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.IsOperatorOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str("API_TOKEN_THROTTLE", "10/minute"),
        "live_fetch": env_str("LIVE_FETCH_THROTTLE", "2/minute"),
    },
    # The client address of throttles (and of the sign-in lockout, see api/client_address.py).
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.negotiation.FormatNegotiation",
}
API_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 720, minimum=0)
# A token accepted this recently is accepted again without a query (0: always ask the database).
API_TOKEN_CACHE_SECONDS = env_int("API_TOKEN_CACHE_SECONDS", 5, minimum=0)
REST_KNOX = {
    # 0 means tokens never expire; they can still be revoked.
    "TOKEN_TTL": timedelta(hours=API_TOKEN_TTL_HOURS) if API_TOKEN_TTL_HOURS else None,
    "AUTH_HEADER_PREFIX": "Token",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "rainlog API",
    "DESCRIPTION": "Loss-free records of household electricity use from Rainforest EAGLE gateways.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and its Swagger/ReDoc pages hold no data: anyone may read them (client
    # generators fetch the schema without a token).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"FailureClassEnum": "ingestion.models.FAILURE_CLASS_CHOICES"},
    "PREPROCESSING_HOOKS": ["api.schema.one_form_per_route"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.document_errors",
    ],
    "PATH_CONVERTER_OVERRIDES": {
        "cloud_id": {"type": "string", "pattern": "^[0-9A-Fa-f]{1,32}$"},
    },
}

# --- Sign-in lockout (django-axes) -------------------------------------------------------------
# Failed sign-ins (admin, browsable API, token endpoint) are recorded in the database, so every
# process sees them; this many from one address lock it out for LOGIN_LOCKOUT_MINUTES.

AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "api.client_address.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429

# --- Task queue (django-q2) --------------------------------------------------------------------

REDIS_URL = env_url("REDIS_URL")
INGEST_WINDOW_SECONDS = 60
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "rainlog"),
    "workers": env_int("Q_WORKERS", 4, minimum=1),
    # A polling window task runs the ticks of its minute and may wait up to a minute for the
    # hand-over, so the timeout leaves room for both; retry must exceed timeout.
    "timeout": env_int("Q_TIMEOUT", 300, minimum=1),
    "retry": env_int("Q_RETRY", 360, minimum=2),
    "max_attempts": 1,
    "catch_up": False,
    "recycle": 100,
    "save_limit": 1000,
    "label": "Task queue",
    "sync": env_bool("Q_SYNC", False),
}
# Throttle counts live in a cache every process shares: Redis when there is one, else the
# database (its table is made by a migration: `manage.py migrate`). With Redis, the poller keeps
# each user's latest reading there too (ingestion/polling/latest.py). A Redis that stops answering
# costs a request or a poller's write REDIS_TIMEOUT_SECONDS, not a hang.
REDIS_TIMEOUT_SECONDS = 1.0
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "rainlog_cache",
        }
    }
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.5

# --- Ingestion ---------------------------------------------------------------------------------

LOG_ROOT = Path(env_str("LOG_ROOT", str(VAR_DIR / "logs")))
# A development run talks to the local simulator (`make run` starts it) unless told otherwise:
# trying a command on a laptop never sends a household's credentials to the real cloud.
EAGLE_CLOUD_URL = env_url(
    "EAGLE_CLOUD_URL",
    "http://127.0.0.1:8765/cgi-bin/post_manager"
    if DEBUG
    else "https://rainforestcloud.com:9445/cgi-bin/post_manager",
)
INGEST_POLL_SECONDS = env_float("INGEST_POLL_SECONDS", 6.0, minimum=0.5)
INGEST_REQUEST_TIMEOUT = env_float("INGEST_REQUEST_TIMEOUT", 4.0, minimum=0.1)
INGEST_CONCURRENCY = env_int("INGEST_CONCURRENCY", 1000, minimum=1)
INGEST_SHARDS = env_int("INGEST_SHARDS", 1, minimum=1)
INGEST_LEASE_SECONDS = env_int("INGEST_LEASE_SECONDS", 10, minimum=5)
if INGEST_LEASE_SECONDS <= INGEST_POLL_SECONDS:
    # Renewed once a tick, a shorter lease runs out between two ticks of a healthy holder.
    raise ImproperlyConfigured(
        f"INGEST_LEASE_SECONDS={INGEST_LEASE_SECONDS} must be longer than "
        f"INGEST_POLL_SECONDS={INGEST_POLL_SECONDS:g}."
    )
# A poller keeps its users' hour files open (within its limit of open files, which it raises to
# the hard limit): opening a file for each reading cost more than writing it.
INGEST_OPEN_FILES = env_int("INGEST_OPEN_FILES", 50_000, minimum=8)
INGEST_EXTRA_POLL_SECONDS = env_int("INGEST_EXTRA_POLL_SECONDS", 60, minimum=6)
INGEST_SUSPEND_AFTER_AUTH_FAILURES = env_int("INGEST_SUSPEND_AFTER_AUTH_FAILURES", 5, minimum=1)
INGEST_MAX_BACKOFF_SECONDS = env_int("INGEST_MAX_BACKOFF_SECONDS", 300, minimum=6)
INGEST_MAX_DEMAND_KW = env_float("INGEST_MAX_DEMAND_KW", 200.0, minimum=1.0)
# Transient failures (timeouts, HTTP errors, bad replies) open an incident only when this many
# come in a row; bad credentials, unknown cloud ids and a lost meter open one at once.
INGEST_INCIDENT_AFTER_FAILURES = env_int("INGEST_INCIDENT_AFTER_FAILURES", 3, minimum=1)
# A meter whose reading has not changed for this long gets a stale-reading incident.
INGEST_STALL_SECONDS = env_int("INGEST_STALL_SECONDS", 300, minimum=10)
# How often a meter publishes a new reading (8 to 10 s): an hour holds about 3600 / this readings.
INGEST_METER_SECONDS = env_float("INGEST_METER_SECONDS", 10.0, minimum=1.0)
# Largest body POST /api/push/<cloud_id> accepts (an uploader fragment is under 1 KB).
PUSH_MAX_BODY_BYTES = env_int("PUSH_MAX_BODY_BYTES", 65536, minimum=1024)

# Local gateways (EAGLE-200s) live on private networks, which a server must not reach unasked:
# a gateway_address in a private, loopback, link-local or metadata range is refused unless one of
# these networks (CIDR, comma-separated) contains it. DEBUG allows loopback, for the simulator.
GATEWAY_ALLOWED_NETWORKS = env_list(
    "GATEWAY_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"] if DEBUG else []
)
for _network in GATEWAY_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"GATEWAY_ALLOWED_NETWORKS: {_network!r} is not a network such as 192.168.1.0/24."
        ) from None

# --- Archive -----------------------------------------------------------------------------------

ARCHIVE_BUCKET = env_str("ARCHIVE_BUCKET")
ARCHIVE_PREFIX = env_str("ARCHIVE_PREFIX", "rainforest-logs").strip("/")
# The Parquet dataset of every reading (ingestion/parquet.py), beside the hour files.
PARQUET_PREFIX = env_str("PARQUET_PREFIX", "rainforest-parquet").strip("/")
# Its summaries (the demand of each household-minute), which the fleet aggregates read: outside
# PARQUET_PREFIX, so that tools reading the dataset's tree find readings only.
PARQUET_SUMMARY_PREFIX = env_str("PARQUET_SUMMARY_PREFIX", "rainforest-parquet-summary").strip("/")
_prefixes = {
    "ARCHIVE_PREFIX": ARCHIVE_PREFIX,
    "PARQUET_PREFIX": PARQUET_PREFIX,
    "PARQUET_SUMMARY_PREFIX": PARQUET_SUMMARY_PREFIX,
}
for _name, _prefix in _prefixes.items():
    for _other, _other_prefix in _prefixes.items():
        if _other != _name and f"{_prefix}/".startswith(f"{_other_prefix}/"):
            raise ImproperlyConfigured(
                f"{_name}={_prefix!r} is within {_other}={_other_prefix!r}: each needs a prefix "
                "of its own."
            )
ARCHIVE_COMPRESS = env_str("ARCHIVE_COMPRESS", "")
if ARCHIVE_COMPRESS not in ("", "gzip"):
    raise ImproperlyConfigured(
        f"ARCHIVE_COMPRESS={ARCHIVE_COMPRESS!r}: use 'gzip' or leave it empty."
    )
ARCHIVE_ROOT = Path(env_str("ARCHIVE_ROOT", str(VAR_DIR / "archive")))
ROTATE_GRACE_SECONDS = env_int("ROTATE_GRACE_SECONDS", 120, minimum=0)
ROTATE_CONCURRENCY = env_int("ROTATE_CONCURRENCY", 16, minimum=1)
# A rotation's hold on a file it ships; another run may take the file over once it lapses.
ROTATE_LEASE_SECONDS = env_int("ROTATE_LEASE_SECONDS", 900, minimum=30)
# A failed upload is retried after 60 s, then twice as long each time, up to this.
ROTATE_RETRY_MAX_SECONDS = env_int("ROTATE_RETRY_MAX_SECONDS", 3600, minimum=60)
# An hour directory keeps its sealed markers this long once all its files are verified; a reading
# for that hour arriving later still is shipped as a new late part.
ROTATE_MARKER_RETENTION_HOURS = env_int("ROTATE_MARKER_RETENTION_HOURS", 168, minimum=1)
# /healthz turns red when the oldest hour not yet verified in the archive began longer ago.
ARCHIVE_FRESHNESS_ALERT_SECONDS = env_int("ARCHIVE_FRESHNESS_ALERT_SECONDS", 10800, minimum=3600)
AWS_S3_ENDPOINT_URL = env_url("AWS_S3_ENDPOINT_URL") or None
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", "us-east-1")

if ARCHIVE_BUCKET:
    ARCHIVE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": ARCHIVE_BUCKET,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "region_name": AWS_S3_REGION_NAME,
            "file_overwrite": False,
            "default_acl": None,
            "querystring_expire": 300,
            # One connection per rotation worker, so none waits for (or discards) a connection.
            "client_config": BotoConfig(max_pool_connections=max(10, ROTATE_CONCURRENCY)),
        },
    }
else:
    ARCHIVE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARCHIVE_ROOT)},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    "archive": ARCHIVE_STORAGE,
}

# --- SQL readings store (optional) -------------------------------------------------------------

# "postgres" loads sealed hours into the partitioned `readings` table (ingestion/readings_store.py);
# empty keeps readings in files only. It needs PostgreSQL: on SQLite it stays off (a system check
# says so).
READINGS_STORE = env_str("READINGS_STORE", "").strip().lower()
if READINGS_STORE not in ("", "postgres"):
    raise ImproperlyConfigured(
        f"READINGS_STORE={READINGS_STORE!r}: use 'postgres' or leave it empty."
    )
# Keep each reading's `raw` object (jsonb) in the table; without it the readings endpoint keeps
# reading files, while aggregates and coverage still come from the table.
READINGS_KEEP_RAW = env_bool("READINGS_KEEP_RAW", True)
# Days of readings kept in the table (whole daily partitions are dropped); 0 keeps them all.
READINGS_RETENTION_DAYS = env_int("READINGS_RETENTION_DAYS", 0, minimum=0)
# Minutes between load passes (django-q2 schedules have a one-minute resolution).
READINGS_LOAD_INTERVAL = env_int("READINGS_LOAD_INTERVAL", 5, minimum=1)
# Hours loaded at once by one pass, each over its own database connection.
READINGS_LOAD_WORKERS = env_int("READINGS_LOAD_WORKERS", 2, minimum=1)

# --- Incident reports to an external endpoint --------------------------------------------------

ERROR_REPORT_URL = env_url("ERROR_REPORT_URL")
ERROR_REPORT_SECRET = env_secret("ERROR_REPORT_SECRET")
if ERROR_REPORT_URL and not ERROR_REPORT_SECRET:
    raise ImproperlyConfigured(
        "ERROR_REPORT_URL is set but ERROR_REPORT_SECRET is not: reports are always signed."
    )
# Per-attempt HTTP timeout; a pass stops at the first unreachable endpoint, so this bounds it.
ERROR_REPORT_TIMEOUT = env_float("ERROR_REPORT_TIMEOUT", 5.0, minimum=0.5)
ERROR_REPORT_MAX_ATTEMPTS = env_int("ERROR_REPORT_MAX_ATTEMPTS", 15, minimum=1)
ERROR_REPORT_MAX_BACKOFF_SECONDS = env_int("ERROR_REPORT_MAX_BACKOFF_SECONDS", 3600, minimum=30)
# Incidents opened or resolved longer ago than this when first seen are not reported.
ERROR_REPORT_LOOKBACK_HOURS = env_int("ERROR_REPORT_LOOKBACK_HOURS", 24, minimum=1)

# --- Admin console -----------------------------------------------------------------------------

# /dev/playground (staff only) is served when DEBUG is on, and in production only when enabled.
PLAYGROUND_ENABLED = env_bool("PLAYGROUND_ENABLED", DEBUG)

# Households whose readings estimate the fleet's demand curve on the dashboard (see ingestion/console/dashboard.py).
CONSOLE_DEMAND_SAMPLE = env_int("CONSOLE_DEMAND_SAMPLE", 20, minimum=1)

# --- Monitoring --------------------------------------------------------------------------------

# /metrics answers only requests with `Authorization: Bearer <METRICS_TOKEN>`; without a token it
# is open when DEBUG is on and closed otherwise (`check --deploy` warns).
METRICS_TOKEN = env_secret("METRICS_TOKEN")

# --- Logging -----------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # At DEBUG it logs whole template contexts, such as a page showing a new push token.
        "django.template": {"level": "INFO"},
    },
}
