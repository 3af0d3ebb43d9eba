"""Many rows in one go: the writes of the machines' hot path.

A finished task-set brings dozens of event and task-job rows, thousands of
times a minute. ``bulk_create`` builds a model instance per row and compiles a
statement per batch, which costs more than the database's own work, so these
rows travel as plain tuples: ``COPY`` on PostgreSQL (its fastest way in) and one
prepared ``INSERT`` run over all rows on SQLite. Callers own the transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from django.db import connection

EVENT_COLUMNS = ("taskset_id", "attempt", "seq", "task_id", "type", "time_ms", "received_at")
TASKJOB_COLUMNS = ("taskset_id", "task_id", "job_number", "release_ms", "start_ms", "end_ms", "exit_type")


def insert_rows(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``table``."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(_copy_statement(table, tuple(columns))) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(_insert_statement(table, tuple(columns)), rows)


def database_time(moment: datetime):
    """A time-stamp as the database wants it in a plain statement."""
    return connection.ops.adapt_datetimefield_value(moment)


@lru_cache(maxsize=16)
def _copy_statement(table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    return f"COPY {quote(table)} ({', '.join(map(quote, columns))}) FROM STDIN"


@lru_cache(maxsize=16)
def _insert_statement(table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    return f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) VALUES ({', '.join(['%s'] * len(columns))})"


def insert_returning_ids(table: str, columns: Sequence[str], rows: Sequence[tuple]) -> list[int]:
    """Insert a few rows in one statement and return their ids in order (both
    databases return the rows of a multi-row INSERT in the order given)."""
    quote = connection.ops.quote_name
    values = ", ".join([f"({', '.join(['%s'] * len(columns))})"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) VALUES {values} RETURNING id",
            [value for row in rows for value in row],
        )
        return [row[0] for row in cursor.fetchall()]


def execute(sql: str, params: Sequence) -> int:
    """Run one plain statement; returns the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def db_value(model, field: str, value):
    """A value as ``field`` stores it (a lease UUID, a JSON document), for a plain statement."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)
