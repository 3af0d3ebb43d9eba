"""Environment variables, read in one place and refused loudly when malformed.

Every setting that comes from the environment goes through these helpers so a
typo in a deployment fails at start-up with the variable's name, instead of
surfacing hours later as a strange connection error.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value}: must be at most {maximum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: must be one of 1/0, true/false, yes/no, on/off")


def env_host_name(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    if not _HOST_NAME.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name}={value!r}: must be 1-63 letters, digits, '.', '_' or '-' (it names a queue)"
        )
    return value


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


# libpq connection keywords: a database host that vanishes (a failover, a
# dropped network) costs a machine seconds, not the kernel's ~15 minutes of
# TCP retransmissions, during which it could not even hear a kill.
POSTGRESQL_OPTIONS = {
    "connect_timeout": 10,  # seconds
    "keepalives": 1,  # an idle connection's peer is probed ...
    "keepalives_idle": 30,  # ... after 30 s of silence,
    "keepalives_interval": 10,  # every 10 s,
    "keepalives_count": 3,  # and declared gone after 3 missed probes
    "tcp_user_timeout": 30000,  # ms: sent data unacknowledged this long (where keepalives do not help)
}


def database_from_env(name: str, sqlite_default: Path) -> dict:
    """DATABASES['default'] from a URL: postgres://… or sqlite:///path; SQLite when unset.

    SQLite is opened with IMMEDIATE transactions, WAL and a busy timeout because
    the web server, the clusters and every machine write to it at once.
    """
    raw = os.environ.get(name, "")
    if not raw:
        return _sqlite(sqlite_default)
    parts = urlsplit(raw)
    if parts.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy reads them
        path = unquote(parts.path)[1:]
        if not path:
            raise ImproperlyConfigured(f"{name}={raw!r}: a sqlite URL needs a file path (sqlite:////abs/db.sqlite3)")
        return _sqlite(Path(path))
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ImproperlyConfigured(f"{name}={raw!r}: the URL names no database")
        try:
            port = parts.port or 5432
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r}: the port is not a number") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port),
            "CONN_MAX_AGE": 0,
            "OPTIONS": dict(POSTGRESQL_OPTIONS),
            "TEST": {"NAME": f"test_{database}"},
        }
    raise ImproperlyConfigured(f"{name}={raw!r}: scheme must be postgres:// or sqlite://")


def _sqlite(path: Path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # Tests run real cluster processes that must see the test database,
        # so it is a file beside the real one, never ":memory:".
        "TEST": {"NAME": str(path.with_name(f"test_{path.name}"))},
    }


def redis_from_env(name: str) -> str | None:
    raw = os.environ.get(name, "")
    if not raw:
        return None
    if urlsplit(raw).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name}={raw!r}: scheme must be redis://, rediss:// or unix://")
    return raw
