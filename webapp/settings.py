"""The one settings file. Everything that varies between deployments comes from
the environment through ``webapp.env`` (see README, "Configuration")."""
from __future__ import annotations

import socket
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

from csp.constants import NONE, SELF, UNSAFE_INLINE

from webapp.env import (
    database_from_env,
    env_bool,
    env_host_name,
    env_int,
    env_path,
    env_str,
    redis_from_env,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "data")
DATA_DIR.mkdir(parents=True, exist_ok=True)
LOG_DIR = env_path("LOG_DIR", DATA_DIR / "logs")
LOG_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    # A development key kept in DATA_DIR so sessions survive restarts; a
    # production deployment sets SECRET_KEY (README, "Deployment").
    _key_file = DATA_DIR / "secret_key"
    if not _key_file.exists():
        from django.utils.crypto import get_random_string

        _key_file.write_text(get_random_string(64))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

# Production behind a TLS-terminating proxy (README, "Deployment"): secure
# cookies, HSTS and HTTPS redirects; `manage.py check --deploy` is clean.
HTTPS = env_bool("DISTRIBUTOR_HTTPS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles come from static
# files only — no inline script, no eval (htmx's eval is off in base.html) —
# and no site may frame a page. Style *attributes* stay allowed: the progress
# bars' widths are written as style="width: …%", and templates escape every
# value, so no one else's attribute can get in.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SESSION_COOKIE_HTTPONLY = True
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_q",
    "distributor",
    "distributor.campaigns",
    "webapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.nul_bytes.NulBytesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before anything reads a body (CsrfViewMiddleware does, in its view phase).
    "webapp.limits.BodyLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as its documentation asks: it answers a login refused for throttling.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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

DATABASES = {"default": database_from_env("DATABASE_URL", DATA_DIR / "distributor.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Login throttling (django-axes) on /login/ and the admin's login: after 10
# failures for a user name, or from an address, within 15 minutes, logins
# are refused for 15 minutes with a page that says so (429). API tokens never
# pass through it. `python manage.py axes_reset` lifts every lock at once.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the cool-down ends when the page says
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
# Behind the TLS proxy every request comes from the proxy: the client is the
# address the proxy appended to X-Forwarded-For.
AXES_CLIENT_IP_CALLABLE = "webapp.access.client_address"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Where uploaded binaries and images were kept before they moved into the
# database (migration 0014 reads it once); a host's copies are in DATA_DIR/cache.
MEDIA_ROOT = DATA_DIR / "uploads"

# Upload limits: a task-set file is small even when it expands to 10^9 variants.
TASKSET_FILE_MAX_BYTES = env_int("TASKSET_FILE_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
BINARY_MAX_BYTES = env_int("BINARY_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 512 * 1024 * 1024, minimum=1024)
# A task-set's wall-clock limit, unless its job sets one (time_limit): its task model's span
# (latest offset + period × jobs, sessions.outcomes.expected_span_ms) times this factor plus this margin.
TASKSET_TIME_FACTOR = env_int("TASKSET_TIME_FACTOR", 2, minimum=1, maximum=1000)
TASKSET_TIME_MARGIN_S = env_int("TASKSET_TIME_MARGIN_S", 60, minimum=0)
# A target's console file is rotated past this size (three older ones kept: name.log.1 … .3).
CONSOLE_MAX_BYTES = env_int("CONSOLE_MAX_BYTES", 10 * 1024 * 1024, minimum=4096)
# A submission's body (webapp/limits.py refuses a longer one unread): room for
# a file or a pasted text of twice the file's limit and the options, so that
# a text somewhat over the limit is still refused at its field.
SUBMISSION_MAX_BYTES = 2 * TASKSET_FILE_MAX_BYTES + 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = SUBMISSION_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Large uploads (boot images) spool under DATA_DIR, not in a small /tmp.
FILE_UPLOAD_TEMP_DIR = DATA_DIR / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(exist_ok=True)

# --- The distributor -------------------------------------------------------
# Host name of this machines cluster: machines launched here record it, and
# their launch messages go to the queue "machines-<host>".
DISTRIBUTOR_HOST = env_host_name("DISTRIBUTOR_HOST", socket.gethostname().split(".")[0] or "localhost")
# Hard ceiling of the operator's cap (the seeds' 42 came from the DHCP range).
DISTRIBUTOR_CAP = env_int("DISTRIBUTOR_CAP", 42, minimum=1, maximum=1024)
# Worker processes of this host's machines cluster: one per machine it may run.
DISTRIBUTOR_MACHINE_WORKERS = env_int("DISTRIBUTOR_MACHINE_WORKERS", 16, minimum=1, maximum=1024)
MACHINES_CLUSTER = f"machines-{DISTRIBUTOR_HOST}"
# Extra modules that register session kinds of a site's own (comma-separated).
DISTRIBUTOR_SESSION_MODULES = [m.strip() for m in env_str("DISTRIBUTOR_SESSION_MODULES", "").split(",") if m.strip()]
# Monitors a job may name (submit --monitor NAME): name -> dotted path of a
# distributor.monitors.Monitor subclass. A site adds its own here.
DISTRIBUTOR_MONITORS = {"logging": "distributor.monitors.LoggingMonitor"}
# The site's address as users reach it, e.g. https://distributor.example: the
# links in a job's notification (distributor/notifications.py) start with it.
DISTRIBUTOR_URL = env_str("DISTRIBUTOR_URL", "")
# Notification URLs may name this site's own network (loopback, private,
# link-local addresses): off, any user could make the server POST to the
# database's port or an internal service; on for a lab whose hooks live there.
DISTRIBUTOR_NOTIFY_INTERNAL = env_bool("DISTRIBUTOR_NOTIFY_INTERNAL", False)

# QEMU pools' network (distributor/network.py): a bridge with its address,
# one tap and one DHCP-assigned address per machine slot, optionally inside a
# network namespace of its own.
DISTRIBUTOR_BRIDGE = env_str("DISTRIBUTOR_BRIDGE", "br0")
DISTRIBUTOR_BRIDGE_CIDR = env_str("DISTRIBUTOR_BRIDGE_CIDR", "10.200.45.254/24")
DISTRIBUTOR_FIRST_ADDRESS = env_str("DISTRIBUTOR_FIRST_ADDRESS", "10.200.45.1")
DISTRIBUTOR_TAP_PREFIX = env_str("DISTRIBUTOR_TAP_PREFIX", "tap")
DISTRIBUTOR_NETNS = env_str("DISTRIBUTOR_NETNS", "")
# A QEMU pool boots uploaded images only; 1 also lets kernel and initrd name an
# absolute path on the host (the test guest; a site whose operators want it).
DISTRIBUTOR_QEMU_HOST_IMAGES = env_bool("DISTRIBUTOR_QEMU_HOST_IMAGES", False)

REDIS_URL = redis_from_env("REDIS_URL")
_broker = {"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}
Q_CLUSTER = {
    # "name" is the site prefix shared by all clusters (it salts the payloads).
    "name": "distributor",
    "workers": env_int("DISTRIBUTOR_CONTROL_WORKERS", 2, minimum=1, maximum=64),
    "timeout": 120,
    "retry": 300,
    "poll": 0.2,
    "guard_cycle": 0.5,
    "catch_up": False,
    "save_limit": 200,
    "ack_failures": True,
    "max_attempts": 1,
    **_broker,
    "ALT_CLUSTERS": {
        # Machines are tasks that run for days. A duplicate delivery is
        # harmless (it finds its machine row taken and exits), so a long
        # retry only bounds how late a lost launch message might reappear.
        MACHINES_CLUSTER: {
            "workers": DISTRIBUTOR_MACHINE_WORKERS,
            "queue_limit": 1,
            "timeout": 7 * 24 * 3600,
            "retry": 8 * 24 * 3600,
            "recycle": 1_000_000,
            "max_attempts": 1,
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "distributor_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(LOG_DIR / "distributor.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
            "formatter": "plain",
            "delay": True,
        },
    },
    "loggers": {
        "distributor": {"handlers": ["distributor_file", "console"], "level": env_str("LOG_LEVEL", "INFO")},
        "sessions": {"handlers": ["distributor_file"], "level": env_str("LOG_LEVEL", "INFO")},
        "django-q": {"handlers": ["console"], "level": env_str("Q_LOG_LEVEL", "WARNING"), "propagate": False},
        # Server errors (500) with their traceback: with DEBUG off they left no
        # trace anywhere. They also reach Django's own "django" logger, which
        # mails them to ADMINS when that is set (below).
        "django.request": {"handlers": ["distributor_file"], "level": "ERROR"},
    },
}

# Optional mail of every server error: ADMINS="Ana <ana@example.org>,ops@example.org"
# and an SMTP server (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD,
# EMAIL_USE_TLS, SERVER_EMAIL); nothing is mailed while ADMINS is empty.
ADMINS = [parseaddr(entry.strip()) for entry in env_str("ADMINS", "").split(",") if entry.strip()]
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
SERVER_EMAIL = env_str("SERVER_EMAIL", "distributor@localhost")
