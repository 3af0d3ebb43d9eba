"""Plain statements for the machines' hot path.

A machine claims and finishes task-sets thousands of times a minute, each with
dozens of event and task-job rows. The ORM builds a model instance per row and
compiles every statement, which costs more than the database's own work, so
the hot path writes plain tuples with the statements below: ``COPY`` on
PostgreSQL for many rows (its fastest way in), one multi-row ``INSERT`` for a
few, and one prepared ``INSERT`` run over all rows on SQLite. Callers own the
transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from django.db import connection

EVENT_COLUMNS = ("taskset_id", "attempt", "seq", "task_id", "type", "time_ms", "received_at")
TASKJOB_COLUMNS = ("taskset_id", "task_id", "job_number", "release_ms", "start_ms", "end_ms", "exit_type")
COPY_FROM_ROWS = 100  # COPY costs round trips of its own: fewer rows go in one INSERT


def insert_rows(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``table``."""
    if not rows:
        return
    head = _insert_head(table, tuple(columns))
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.executemany(f"{head} VALUES {_values(len(columns), 1)}", rows)
        elif len(rows) < COPY_FROM_ROWS:
            cursor.execute(f"{head} VALUES {_values(len(columns), len(rows))}", [v for row in rows for v in row])
        else:
            with cursor.cursor.copy(f"COPY {head.removeprefix('INSERT INTO ')} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def insert_returning_ids(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> list[int]:
    """Insert a few rows in one statement and return their ids in order (both
    databases return the rows of a multi-row INSERT in the order given)."""
    with connection.cursor() as cursor:
        cursor.execute(f"{_insert_head(table, tuple(columns))} VALUES {_values(len(columns), len(rows))} RETURNING id",
                       [value for row in rows for value in row])
        return [row[0] for row in cursor.fetchall()]


def execute(sql: str, params: Sequence) -> int:
    """Run one plain statement; returns the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def database_time(moment: datetime):
    """A time-stamp as the database wants it in a plain statement."""
    return connection.ops.adapt_datetimefield_value(moment)


def db_value(model, field: str, value):
    """A value as ``field`` stores it (a lease UUID, a JSON document), for a plain statement."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)


@lru_cache(maxsize=32)
def _insert_head(table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    return f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))})"


@lru_cache(maxsize=256)
def _values(columns: int, rows: int) -> str:
    return ", ".join([f"({', '.join(['%s'] * columns)})"] * rows)
