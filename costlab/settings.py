"""costlab settings, all from the environment.

With nothing set, costlab runs on an embedded default (SQLite and Celery's filesystem
broker) so `make run` needs no server. DATABASE_URL and CELERY_BROKER_URL switch to
PostgreSQL and Redis; docker/ sets them the same way.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

# Django's admin and form classes are generic in django-stubs only; this lets the code
# write ModelAdmin[ModelPrice] for the type checker without failing at import time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("COSTLAB_VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    return int(os.getenv(name, str(default)))


def dev_secret_key(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(50)) -> str:
    """A random key made once per installation and kept in var/: sessions survive restarts,
    and no two checkouts share a key. Linked into place so parallel starts agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(make())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


# Development mode is explicit: `make run`, bin/run, the test settings, or COSTLAB_DEV=true.
COSTLAB_DEV = envbool("COSTLAB_DEV", "false")
DEBUG = envbool("DEBUG", "false")
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not COSTLAB_DEV:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. A deployment sets SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'); to run locally, "
            "set COSTLAB_DEV=true and a development key is generated under var/."
        )
    SECRET_KEY = dev_secret_key(VAR_DIR / "secret_key")


def fernet_key() -> str:
    """A new Fernet key: 32 random bytes, url-safe base64 (what Fernet.generate_key makes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


# Provider API keys are encrypted at rest with these (calls/crypto.py): comma-separated
# Fernet keys, the first encrypts, every one decrypts. Rotation: README, "Calling models".
COSTLAB_FERNET_KEYS = [
    k.strip() for k in os.getenv("COSTLAB_FERNET_KEYS", "").split(",") if k.strip()
]
if not COSTLAB_FERNET_KEYS:
    if not COSTLAB_DEV:
        raise ImproperlyConfigured(
            "COSTLAB_FERNET_KEYS is not set. A deployment sets it to a Fernet key "
            "(python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'), "
            "which encrypts provider API keys at rest; in development mode (COSTLAB_DEV=true) "
            "one is generated under var/."
        )
    COSTLAB_FERNET_KEYS = [dev_secret_key(VAR_DIR / "fernet_key", fernet_key)]
ALLOWED_HOSTS = [
    h for h in os.getenv("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# HTTPS: on unless in development mode. Behind a TLS-terminating proxy, COSTLAB_PROXY_SSL_HEADER
# names the header it sets to "https" (X-Forwarded-Proto); only name one the proxy overwrites.
COSTLAB_HTTPS = envbool("COSTLAB_HTTPS", "false" if COSTLAB_DEV else "true")
SECURE_SSL_REDIRECT = COSTLAB_HTTPS
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = COSTLAB_HTTPS
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000) if COSTLAB_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "true")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "false")
_proxy_ssl_header = os.getenv("COSTLAB_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
# How many proxies in front append to X-Forwarded-For: the login throttle counts failures per
# client address, which is then the entry that many places from the right (0: REMOTE_ADDR).
COSTLAB_PROXY_COUNT = envint("COSTLAB_PROXY_COUNT", 0)

INSTALLED_APPS = [
    "costlab.apps.OperatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before WhiteNoise's: its runserver with TCP_NODELAY (costlab/devserver).
    "costlab.devserver",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "conversations",
    "pricing",
    "calls",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "costlab.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "costlab.urls"
WSGI_APPLICATION = "costlab.wsgi.application"

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
                "conversations.context_processors.organizations",
            ],
        },
    }
]

_SQLITE_PATH = VAR_DIR / "costlab.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker share the file: wait for locks instead of failing,
    # and give tests a file (not :memory:) so a real worker process can see their data.
    # WAL lets pages read while an import writes. SQLite still has one writer at a time:
    # a long import holds it until it commits (PostgreSQL has no such limit).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_costlab.sqlite3")}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif envbool("COSTLAB_DB_PREPARE", "false"):
    # psycopg binds parameters server-side, so a statement run again (every ORM query of a
    # call has the same text each time) is prepared once per session and PostgreSQL parses
    # and plans it no more: its CPU per chat call went from ~10 to ~6 ms (bench/calls.py).
    # Opt-in, not the default: server-side binding caps a statement at 65,535 parameters
    # (an import's id lists can hold more) and changes how every query is sent; and it must
    # stay off behind a pooler that cannot keep prepared statements (PgBouncer's transaction
    # mode before 1.21).
    # Django turns psycopg's preparing off unless a threshold is given: prepared from the
    # second run of a statement's text.
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}

# PostgreSQL: a live call's rollup upserts (conversations/services/rollups.py turns_added)
# are prepared once per session. Off behind a pooler that cannot keep prepared statements
# (PgBouncer's transaction mode before 1.21).
COSTLAB_DB_PREPARE_ROLLUPS = envbool("COSTLAB_DB_PREPARE_ROLLUPS", "true")
# psycopg converts a statement's text (its %s to $n, split at each) once and keeps the result,
# but only for statements of up to 4,096 bytes and 50 parameters: a chat call's rollup upserts
# (up to 12 kB, conversations/services/rollups.py) and its two usage records' insert (~80
# parameters) were split again each call, ~5 % of a worker's CPU per chat call (py-spy on
# bench/calls.py). The cache stays psycopg's: 128 statements, least recently used out.
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    from psycopg import _queries as _psycopg_queries

    _psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = max(
        _psycopg_queries.MAX_CACHED_STATEMENT_LENGTH, 16_384
    )
    _psycopg_queries.MAX_CACHED_STATEMENT_PARAMS = max(
        _psycopg_queries.MAX_CACHED_STATEMENT_PARAMS, 200
    )

# PostgreSQL: a chat call's reads planned slowest (the worker's claim, the send's state and
# lock, the request's messages: calls/services/updates.py rows_fetch) are prepared once per
# session. Off behind such a pooler too.
COSTLAB_DB_PREPARE_CALLS = envbool("COSTLAB_DB_PREPARE_CALLS", "true")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Content Security Policy, in the shape of Django 6's SECURE_CSP: costlab's own scripts and
# styles only, no inline script (figures travel as JSON data blocks, not code).
SECURE_CSP: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    # Plotly adds two <style> elements as it loads: an empty one it then fills through the
    # CSSOM (allowed), and MapLibre's stylesheet (unused here). Their hashes let exactly those
    # in, where 'unsafe-inline' would let any injected style in. A Plotly upgrade changes the
    # second: the browser tests then fail naming the new hash. No 'unsafe-eval' is needed.
    "style-src": [
        "'self'",
        "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # the empty element
        "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='",  # MapLibre's, plotly 7.1.0
    ],
    "img-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
# Log-in throttling (costlab/throttle.py): after this many failures within the window, per
# username and per client address, attempts are refused until the window has passed.
COSTLAB_LOGIN_FAILURES_PER_USER = envint("COSTLAB_LOGIN_FAILURES_PER_USER", 5)
COSTLAB_LOGIN_FAILURES_PER_ADDRESS = envint("COSTLAB_LOGIN_FAILURES_PER_ADDRESS", 20)
COSTLAB_LOGIN_WINDOW_SECONDS = envint("COSTLAB_LOGIN_WINDOW_SECONDS", 15 * 60)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# A new organization's time zone (its days in cost by day, date filters and the daily
# rollups); each organization can have its own (Organization.time_zone).
COSTLAB_TIME_ZONE = os.getenv("COSTLAB_TIME_ZONE", "UTC")

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.getenv("STATIC_ROOT", VAR_DIR / "staticfiles"))
# Whitenoise serves from here after collectstatic (and from the finders without it).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(os.getenv("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# Uploads: larger files are written to disk as they arrive, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# The biggest transcript (or unpacked zip) costlab accepts, in bytes.
COSTLAB_MAX_UPLOAD_BYTES = envint("COSTLAB_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024)
# Memory is bounded by these, not by the input. The biggest single JSONL line, JSON array
# item or single-object file (so also the biggest message or string): refused with its
# location once this many bytes of it were read, never held whole. An import's peak is
# about 110 MB plus 20 times its biggest record of text (tokens, stored copies): 8 MiB keeps
# a worker near 300 MB, under the 500 MB the bad-input suite holds it to.
COSTLAB_MAX_RECORD_BYTES = envint("COSTLAB_MAX_RECORD_BYTES", 8 * 1024 * 1024)
# How many times its compressed size a gzip file or zip member may expand to: a bomb is
# refused after this much, long before COSTLAB_MAX_UPLOAD_BYTES (real logs gzip 5-30x).
COSTLAB_MAX_COMPRESSION_RATIO = envint("COSTLAB_MAX_COMPRESSION_RATIO", 200)

# The what-if on a conversation page (conversations/what_if.py): any member may open it, so
# the work is bounded. Conversations above either size get a message instead of figures.
COSTLAB_WHAT_IF_MAX_CHARS = envint("COSTLAB_WHAT_IF_MAX_CHARS", 5_000_000)
COSTLAB_WHAT_IF_MAX_SENT = envint("COSTLAB_WHAT_IF_MAX_SENT", 1_000_000)
COSTLAB_WHAT_IF_CACHE_SECONDS = envint("COSTLAB_WHAT_IF_CACHE_SECONDS", 24 * 3600)

# Celery. The default broker is a pair of folders: a real worker process, no server.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        # Broadcast (pidbox) state; kombu's default is ./control in the working directory.
        "control_folder": str(_BROKER_DIR / "control"),
        # The worker looks at the folder this often when it found nothing, and takes one
        # message a look: at kombu's 1 s, a chat message sent just after beat's four sweeps
        # waited about 4 s behind them (seen in a make run walk). A listing of a near-empty
        # folder ten times a second costs nothing.
        "polling_interval": 0.1,
    }
# Job state lives in the database (ImportJob rows), so no result backend is needed.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Tests give each worker process its own queue, so no other worker can take their tasks.
CELERY_TASK_DEFAULT_QUEUE = os.getenv("CELERY_QUEUE", "costlab")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "false")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Database connections outlive a task (costlab/celery.py closes the broken and the old ones
# around each task, as Django does around requests); Celery's fixup then closes them only
# every 2 x this many tasks.
CELERY_DB_REUSE_MAX = envint("CELERY_DB_REUSE_MAX", 1000)

# Crash recovery (costlab/heartbeat.py): a running job stamps its row every HEARTBEAT seconds;
# one silent for STALE seconds lost its worker, and the sweep (Celery beat, every SWEEP seconds)
# runs it again from its all-or-nothing start, at most MAX_ATTEMPTS times in all.
COSTLAB_JOB_HEARTBEAT_SECONDS = envint("COSTLAB_JOB_HEARTBEAT_SECONDS", 5)
COSTLAB_JOB_STALE_SECONDS = envint("COSTLAB_JOB_STALE_SECONDS", 30)
COSTLAB_JOB_SWEEP_SECONDS = envint("COSTLAB_JOB_SWEEP_SECONDS", 10)
COSTLAB_JOB_MAX_ATTEMPTS = envint("COSTLAB_JOB_MAX_ATTEMPTS", 3)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "import-jobs-sweep": {
        "task": "conversations.tasks.import_jobs_sweep",
        "schedule": COSTLAB_JOB_SWEEP_SECONDS,
        # Sweeps queued behind a long job are stale by the time a worker gets to them.
        "options": {"expires": COSTLAB_JOB_SWEEP_SECONDS},
    },
    "cost-recomputes-sweep": {
        "task": "pricing.tasks.costs_recompute_sweep",
        "schedule": COSTLAB_JOB_SWEEP_SECONDS,
        "options": {"expires": COSTLAB_JOB_SWEEP_SECONDS},
    },
    "api-calls-sweep": {
        "task": "calls.tasks.api_calls_sweep",
        "schedule": COSTLAB_JOB_SWEEP_SECONDS,
        "options": {"expires": COSTLAB_JOB_SWEEP_SECONDS},
    },
    "experiments-sweep": {
        "task": "calls.tasks.experiments_sweep",
        "schedule": COSTLAB_JOB_SWEEP_SECONDS,
        "options": {"expires": COSTLAB_JOB_SWEEP_SECONDS},
    },
    "uploads-sweep": {
        "task": "conversations.tasks.uploads_sweep",
        "schedule": 3600,
        "options": {"expires": 3600},
    },
}
# Uploaded files are kept this long after their import, then removed by the uploads sweep;
# failed and duplicate uploads (nothing came of them) only for the hours after.
COSTLAB_UPLOAD_RETENTION_DAYS = envint("COSTLAB_UPLOAD_RETENTION_DAYS", 30)
COSTLAB_FAILED_UPLOAD_RETENTION_HOURS = envint("COSTLAB_FAILED_UPLOAD_RETENTION_HOURS", 24)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
}

STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "conversations.staticfinders.VendorFinder",
]

# Progress of running imports is shared between the worker and the web through the cache:
# files under var/ by default (one machine), Redis when CACHE_URL points at it.
CACHE_URL = os.getenv("CACHE_URL", "")
if CACHE_URL.startswith("redis"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            # A Redis that stops answering fails a cache call in seconds, not after the
            # system's connect timeout (minutes): a streamed chat reply writes to it.
            "OPTIONS": {"socket_connect_timeout": 5, "socket_timeout": 5},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
# Several installations (or test runs) sharing one Redis keep apart by a prefix.
CACHES["default"]["KEY_PREFIX"] = os.getenv("COSTLAB_CACHE_PREFIX", "")

# SQLite cannot enforce "one global price row per model and start" (NULLS NOT DISTINCT);
# PostgreSQL does, and prices_import checks before inserting on both.
# security.W021: asking browsers to preload HSTS for the whole domain is its owner's decision
# (SECURE_HSTS_PRELOAD=true), not a default of one application on it.
SILENCED_SYSTEM_CHECKS = ["models.W047", "security.W021"]

# Calling models (calls/). The call service: attempts per call, exponential backoff with
# jitter for 5xx and timeouts (base and ceiling, seconds), the longest Retry-After honoured,
# and the client's timeout per attempt.
COSTLAB_CALL_MAX_ATTEMPTS = envint("COSTLAB_CALL_MAX_ATTEMPTS", 4)
COSTLAB_CALL_BACKOFF_SECONDS = float(os.getenv("COSTLAB_CALL_BACKOFF_SECONDS", "0.5"))
COSTLAB_CALL_BACKOFF_MAX_SECONDS = float(os.getenv("COSTLAB_CALL_BACKOFF_MAX_SECONDS", "20"))
COSTLAB_CALL_MAX_RETRY_AFTER_SECONDS = float(
    os.getenv("COSTLAB_CALL_MAX_RETRY_AFTER_SECONDS", "60")
)
COSTLAB_CALL_TIMEOUT_SECONDS = float(os.getenv("COSTLAB_CALL_TIMEOUT_SECONDS", "60"))
# A call running (or queued) longer than this lost its worker: the sweep sends it again. Above
# the call task's hard time limit (calls/tasks.py, 6 minutes), so no live task is doubled.
COSTLAB_CALL_STALE_SECONDS = envint("COSTLAB_CALL_STALE_SECONDS", 390)
# Experiments (calls/services/experiments.py): at most this many conversations each, this many
# of them replayed at once by one run, and above this estimated spend (USD) starting one
# needs an explicit confirmation.
COSTLAB_EXPERIMENT_MAX_CONVERSATIONS = envint("COSTLAB_EXPERIMENT_MAX_CONVERSATIONS", 200)
COSTLAB_EXPERIMENT_PARALLEL = envint("COSTLAB_EXPERIMENT_PARALLEL", 8)
COSTLAB_EXPERIMENT_CONFIRM_USD = Decimal(os.getenv("COSTLAB_EXPERIMENT_CONFIRM_USD", "1.00"))
# costlab's own OpenAI-compatible endpoint (/v1/): modelled latency of a request with nothing
# cached (a fully cached one answers COSTLAB_ENDPOINT_HIT_SPEEDUP faster), the cache
# retention it simulates, the reply length when a request sets none, and the faults' timings.
COSTLAB_ENDPOINT_LATENCY_MS = float(os.getenv("COSTLAB_ENDPOINT_LATENCY_MS", "4"))
COSTLAB_ENDPOINT_HIT_SPEEDUP = float(os.getenv("COSTLAB_ENDPOINT_HIT_SPEEDUP", "0.8"))
COSTLAB_ENDPOINT_RETENTION_SECONDS = envint("COSTLAB_ENDPOINT_RETENTION_SECONDS", 600)
COSTLAB_ENDPOINT_REPLY_TOKENS = envint("COSTLAB_ENDPOINT_REPLY_TOKENS", 24)
COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS = float(
    os.getenv("COSTLAB_ENDPOINT_TIMEOUT_FAULT_SECONDS", "90")
)
COSTLAB_ENDPOINT_SLOW_CHUNK_MS = float(os.getenv("COSTLAB_ENDPOINT_SLOW_CHUNK_MS", "250"))
