"""Plain statements for the machines' hot path.

A machine claims and finishes task-sets thousands of times a minute, each with
dozens of event and task-job rows. The ORM builds a model instance per row and
compiles every statement, which costs more than the database's own work, so
the hot path writes plain tuples with the statements below. On PostgreSQL
rows go in as one array per column (``INSERT … SELECT * FROM unnest(…)``):
one statement of a fixed number of parameters whatever the number of rows,
so it is prepared once and can travel inside a larger statement (a finished
task-set is one statement, ``TaskSet.finish``). On SQLite one prepared
``INSERT`` runs over all rows. Callers own the transaction.

On PostgreSQL these statements go through a server-side binding cursor and
are prepared once per connection, so the server plans each of them once
rather than thousands of times a minute (Django's own cursors bind on the
client and never prepare, so the rest of the project is unaffected).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

EVENT_COLUMNS = ("taskset_id", "attempt", "seq", "task_id", "type", "time_ms", "received_at")
TASKJOB_COLUMNS = ("taskset_id", "task_id", "job_number", "release_ms", "start_ms", "end_ms", "exit_type",
                   "deadline_abs_ms", "deadline_met")


def insert_rows(model, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``model``'s table."""
    if not rows:
        return
    columns = tuple(columns)
    head = insert_head(model._meta.db_table, columns)
    with prepared_cursor() as cursor:
        if on_postgresql():
            cursor.execute(f"{head} {unnest_select(model, columns)}", column_arrays(model, columns, rows))
        else:
            cursor.executemany(f"{head} VALUES {_values(len(columns), 1)}", rows)


@lru_cache(maxsize=32)
def unnest_select(model, columns: tuple[str, ...]) -> str:
    """``SELECT * FROM unnest(%(event_seq)s::integer[], …)`` (PostgreSQL): rows
    from one array per column, cast to the column's type, with the parameters
    ``column_arrays`` makes; a statement may hold several of them."""
    arrays = [f"%({_array_name(model, column)})s::{model._meta.get_field(column).db_type(connection)}[]"
              for column in columns]
    return f"SELECT * FROM unnest({', '.join(arrays)})"


def column_arrays(model, columns: Sequence[str], rows: Sequence[tuple]) -> dict[str, str]:
    """Rows as one array per column, the parameters of ``unnest_select``,
    written as PostgreSQL array literals: psycopg would adapt each value of a
    list in Python, four times the cost (0.3 ms for a task-set's events)."""
    values = zip(*rows) if rows else [() for _ in columns]
    return {_array_name(model, column): _array_literal(column_values, _is_number(model, column))
            for column, column_values in zip(columns, values)}


def _array_literal(values: Sequence, numbers: bool) -> str:
    """``{1,NULL,3}``; anything but a number is double-quoted, with ``"`` and
    ``\\`` escaped (the array syntax), so no text can end its element. A
    column repeats itself (event types, a message's time of arrival): each
    distinct value is written once."""
    if numbers and None not in values:
        return "{" + ",".join(map(str, map(int, values))) + "}"
    written = {value: _array_element(value, numbers) for value in set(values)}
    return "{" + ",".join([written[value] for value in values]) + "}"


def _array_element(value, number: bool) -> str:
    if value is None:
        return "NULL"
    if number:
        return str(int(value))
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=128)
def _is_number(model, column: str) -> bool:
    """Integer columns, foreign keys to an integer key included."""
    field = model._meta.get_field(column)
    return isinstance(field.target_field if field.is_relation else field, models.IntegerField)


def _array_name(model, column: str) -> str:
    return f"{model._meta.model_name}_{column}"


def execute(sql: str, params: Sequence) -> int:
    """Run one plain statement; returns the number of rows it changed."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch(sql: str, params: Sequence) -> list[tuple]:
    """Run one plain query; returns its rows."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@contextmanager
def prepared_cursor() -> Iterator:
    """A cursor for the statements above: Django's on SQLite; on PostgreSQL
    one that binds on the server and prepares what it runs, kept open for the
    life of the connection (making one costs more than running a prepared
    statement) and wrapped like Django's: its errors are Django's, and query
    wrappers and the debug log see its statements."""
    db = connections[DEFAULT_DB_ALIAS]  # the thread's connection, looked up once
    if not on_postgresql():
        with db.cursor() as django_cursor:
            yield django_cursor
        return
    yield _wrap(db, _server_cursor(db, _ready_connection(db)))


@lru_cache(maxsize=1)
def on_postgresql() -> bool:
    """Whether the database is PostgreSQL (asked once: the vendor never changes)."""
    return connection.vendor == "postgresql"


def placeholders(count: int) -> str:
    """``(%s, %s, ...)``: ``count`` parameters, for ``IN`` and ``VALUES``."""
    return _values(count, 1)


def _ready_connection(db):
    db.ensure_connection()
    db.validate_thread_sharing()
    return db.connection


def _wrap(db, cursor):
    return (_LoggedCursor if db.queries_logged else CursorWrapper)(cursor, db)


class _LoggedCursor(CursorDebugWrapper):
    """Django's debug log reads the text of a server-bound statement back from
    the cursor, which has none once the statement is prepared: log it as written."""

    def execute(self, sql, params=None):
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


def _server_cursor(db, raw):
    """The connection's server-binding cursor; a new connection gets a new one."""
    import psycopg

    kept = getattr(db, "_prepared_cursor", None)
    if kept is None or kept.connection is not raw or kept.closed:
        raw.prepare_threshold = 0  # prepare at first use; only server-binding cursors ever prepare
        kept = db._prepared_cursor = psycopg.Cursor(raw)
    return kept


def now_sql() -> str:
    """The database's clock in a plain statement with parameters, as Django's ``Now()`` writes it."""
    if on_postgresql():
        return "STATEMENT_TIMESTAMP()"
    return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW')"


@lru_cache(maxsize=64)
def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def database_time(moment: datetime):
    """A time-stamp as the database wants it in a plain statement."""
    return connection.ops.adapt_datetimefield_value(moment)


def db_value(model, field: str, value):
    """A value as ``field`` stores it (a lease UUID, a JSON document), for a plain statement."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)


@lru_cache(maxsize=32)
def insert_head(table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    return f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))})"


@lru_cache(maxsize=64)
def _values(columns: int, rows: int) -> str:
    return ", ".join([f"({', '.join(['%s'] * columns)})"] * rows)
