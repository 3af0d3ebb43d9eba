"""The production settings pass Django's deployment checks, and connect to
PostgreSQL in a way that gives up on a vanished server in seconds."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg.conninfo

from webapp.env import POSTGRESQL_OPTIONS, database_from_env

ROOT = Path(__file__).resolve().parent.parent


def run_check(tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DISTRIBUTOR_HTTPS"}}
    environment.update({"DATA_DIR": str(tmp_path), **env})
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=environment, capture_output=True, text=True)


def test_check_deploy_is_clean_in_the_production_settings(tmp_path):
    result = run_check(tmp_path, DEBUG="0", DISTRIBUTOR_HTTPS="1", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="dist.example.org")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_development_setup(tmp_path):
    result = run_check(tmp_path, DEBUG="1")
    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr  # DEBUG on


def test_a_bad_environment_value_fails_loudly_with_its_name(tmp_path):
    result = run_check(tmp_path, DISTRIBUTOR_CAP="many")
    assert result.returncode != 0 and "DISTRIBUTOR_CAP='many': must be an integer" in result.stderr


def test_postgresql_connections_give_up_on_a_vanished_server_in_seconds(monkeypatch):
    """Without them a query on a silently dropped connection blocks for the
    kernel's TCP retransmissions (about 15 minutes), deaf to a kill."""
    monkeypatch.setenv("X_DATABASE_URL", "postgres://u@db.example.org/d")
    options = database_from_env("X_DATABASE_URL", Path("unused"))["OPTIONS"]
    assert options == POSTGRESQL_OPTIONS
    assert options["connect_timeout"] <= 10 and options["keepalives"] == 1 and options["tcp_user_timeout"] > 0
    psycopg.conninfo.make_conninfo("", **options)  # libpq refuses a keyword it does not know
