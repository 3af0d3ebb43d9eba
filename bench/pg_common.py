"""Shared set-up of the PostgreSQL benchmarks (store_rate.py, export_rate.py).

Both take DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db>; the database
is created if missing and migrated, so a fresh server is enough.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme not in {"postgres", "postgresql", "pgsql"}:
        sys.exit("DATABASE_URL must name a PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/dist_bench")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DATA_DIR", "/tmp/distributor-bench")
    _create_database(url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    server = parts._replace(path="/postgres").geturl()
    with psycopg.connect(server, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def bench_job(name: str):
    """A job on a dry-run target to hang the benchmark's rows on."""
    from distributor.models import Job, Target

    target, _ = Target.objects.get_or_create(name="bench", defaults={"kind": "stdio", "settings": {"print": False}})
    job, _ = Job.objects.get_or_create(name=name, target=target,
                                       defaults={"spec": {}, "variant_count": 1, "cursor": 1})
    return job


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s ({rows:,} rows in {seconds:.2f} s)"


def rows_arguments(description: str) -> argparse.ArgumentParser:
    """The export benches' options: the stored job's size (task-sets x tasks
    x task-jobs per task) and --python-path (the portable path, no COPY)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tasksets", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100, help="task-jobs per task")
    parser.add_argument("--python-path", action="store_true")
    return parser
