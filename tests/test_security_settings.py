"""The production settings pass Django's deployment checks."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

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
