"""Data-mining exports: task-jobs and task-sets as CSV or Parquet, everything as SQLite.

Five formats (``FORMATS``):

* ``taskjobs-csv`` — one row per task-job: its job, task-set, variant, task id,
  every task attribute, job number, release, start, end, response time, exit
  type, target and machine (``TASKJOB_COLUMNS``);
* ``tasksets-csv`` — one row per task-set: outcome, attempts, the analytic
  labels and each task's attributes in fixed-width column groups
  ``task<k>_<attribute>``, padded to the largest set of the selection;
* ``taskjobs-parquet``, ``tasksets-parquet`` — the same columns and rows as
  the two CSVs, typed (integers, floats, text, UTC timestamps; 1/0 flags as
  int8), written a row group at a time (``distributor.parquet``);
* ``sqlite`` — an SQLite file with the seeds' three tables (``TaskSet``,
  ``Task``, ``Job``: their queries still work) plus full tables (``jobs``,
  ``tasksets``, ``tasks``, ``taskjobs``, ``targets``, ``machines``, ``meta``)
  and a view ``taskjobs_flat`` with the taskjobs-csv columns.

Memory stays flat whatever the size: rows are read in chunks through server-
side cursors (or PostgreSQL's ``COPY … TO STDOUT``, which formats the very
same SELECT as CSV at the server's speed) and never collected. Numbers are
written as plain numbers, booleans as 1/0, absent values as empty cells, so
``pandas.read_csv`` gives numeric columns. Nothing about people or secrets is
ever selected: no user, owner, token, session, target setting, address,
machine lease or error text (errors may quote a target's configuration).

Entry points: ``csv_chunks(format, selection)`` for a ``StreamingHttpResponse``
(each item is one or more whole CSV lines), ``parquet_chunks(format,
selection)`` likewise (each item a row group's bytes), ``write_sqlite(path,
selection)`` and ``export(format, path, selection)`` for the ``export`` command.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Iterable, Iterator

from django.db import connection
from django.db.models import (BigIntegerField, Case, CharField, Exists, ExpressionWrapper, F, IntegerField, Max,
                              OuterRef, Q, QuerySet, Value, When)
from django.db.models.functions import Cast, Concat, Length, Substr
from django.utils import timezone

from distributor.label_columns import LABEL_COLUMNS, TASK_LABEL_COLUMNS, flat_labels, task_labels
from distributor.models import JobContent, Machine, Target, Task, TaskJob, TaskSet
from distributor.taskfile import QUOTA_UNITS, quota_bytes

FORMATS = ("taskjobs-csv", "tasksets-csv", "sqlite", "taskjobs-parquet", "tasksets-parquet")
PARQUET_FORMATS = ("taskjobs-parquet", "tasksets-parquet")
CHUNK_ROWS = 5000
CHUNK_BYTES = 256 * 1024
# The task model's fields (Task.FIELDS), with quota in bytes beside quota.
TASK_ATTRIBUTES = tuple(name for field in Task.FIELDS for name in ((field, "quota_bytes") if field == "quota" else (field,)))


class ExportError(ValueError):
    """A bad selection; ``option`` names the command option at fault."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True)
class Selection:
    """Which task-sets an export covers: by job, by state, ended since a date
    (a task-set that has not ended counts from its creation)."""

    jobs: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    since: datetime | None = None

    def __post_init__(self):
        unknown = sorted(set(self.states) - set(TaskSet.State.values))
        if unknown:
            raise ExportError("--state", f"unknown state {unknown[0]!r}; known: {', '.join(TaskSet.State.values)}")
        if self.since is not None and timezone.is_naive(self.since):
            object.__setattr__(self, "since", timezone.make_aware(self.since, dt_timezone.utc))

    def q(self, prefix: str = "") -> Q:
        """The filter on task-sets, seen from a model ``prefix`` away."""
        condition = Q()
        if self.jobs:
            condition &= Q(**{f"{prefix}job_id__in": self.jobs})
        if self.states:
            condition &= Q(**{f"{prefix}state__in": self.states})
        if self.since is not None:
            condition &= Q(**{f"{prefix}ended_at__gte": self.since}) | Q(
                **{f"{prefix}ended_at__isnull": True, f"{prefix}created_at__gte": self.since}
            )
        return condition

    def tasksets(self) -> QuerySet:
        return TaskSet.objects.filter(self.q()).order_by("id")

    def describe(self) -> dict:
        return {"jobs": list(self.jobs), "states": list(self.states),
                "since": self.since.isoformat() if self.since else None}


# -- shared helpers ---------------------------------------------------------------


def _quota_bytes(path: str):
    """``quota`` ("100M", "512K", "1G" or plain bytes) as a number of bytes, in
    SQL; ``taskfile.quota_bytes`` does it in Python for rows already read."""
    digits = Cast(Substr(path, 1, Length(path) - 1), BigIntegerField())
    return Case(
        *[When(**{f"{path}__endswith": unit}, then=ExpressionWrapper(digits * Value(factor), output_field=BigIntegerField()))
          for unit, factor in QUOTA_UNITS.items()],
        default=Cast(path, BigIntegerField()),
        output_field=BigIntegerField(),
    )


def _csv_writer(buffer: io.StringIO):
    return csv.writer(buffer, lineterminator="\n")


# A spreadsheet takes a cell that starts with one of these for a formula.
FORMULA_STARTS = ("=", "+", "-", "@")


def csv_text(value):
    """A CSV cell that a spreadsheet would read as a formula, quoted with a
    leading apostrophe (defence in depth: no name allows these today). Only
    text: a number such as -5 is written as the number it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_text_sql(path: str):
    """``csv_text`` in SQL, for the text columns of taskjobs-csv: the COPY
    path and the Python path format the same SELECT, so both escape alike."""
    starts = Q()
    for start in FORMULA_STARTS:
        starts |= Q(**{f"{path}__startswith": start})
    return Case(When(starts, then=Concat(Value("'"), F(path), output_field=CharField())), default=F(path),
                output_field=CharField())


def _chunked_lines(header: list[str], rows: Iterable[Iterable]) -> Iterator[str]:
    """CSV text in chunks of whole lines: few, large writes for HTTP and files.
    Text cells that would be formulas are escaped (``csv_text``)."""
    buffer = io.StringIO()
    writer = _csv_writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_text(cell) for cell in row])
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- taskjobs-csv -----------------------------------------------------------------

TASKJOB_COLUMNS = (
    "job_id", "taskset_id", "variant", "task_id", *TASK_ATTRIBUTES,
    "job_number", "release_ms", "start_ms", "end_ms", "response_ms", "exit_type", "deadline_abs_ms", "deadline_met",
    "target", "machine_id",
)


def _taskjob_expressions(escape: bool = False) -> dict:
    """Column name → expression, in column order. Every column is an
    annotation (with an ``x_`` prefix, since names like ``taskset_id`` are taken
    by model fields), so the SELECT lists them exactly in this order."""
    columns = {
        "job_id": F("taskset__job_id"), "taskset_id": F("taskset_id"), "variant": F("taskset__variant"),
        "task_id": F("task__task_id"),
        **{name: F(f"task__{name}") for name in TASK_ATTRIBUTES if name != "quota_bytes"},
        "job_number": F("job_number"), "release_ms": F("release_ms"), "start_ms": F("start_ms"),
        "end_ms": F("end_ms"),
        "response_ms": ExpressionWrapper(F("end_ms") - F("release_ms"), output_field=BigIntegerField()),
        "exit_type": F("exit_type"), "deadline_abs_ms": F("deadline_abs_ms"),
        # 1/0 on both databases (PostgreSQL's COPY would write t/f)
        "deadline_met": Cast("deadline_met", IntegerField()),
        "target": F("taskset__job__target__name"),
        "machine_id": F("taskset__machine_id"),
    }
    columns["quota_bytes"] = _quota_bytes("task__quota")
    if escape:  # the CSV's text cells (csv_text)
        columns.update({"pkg": _csv_text_sql("task__pkg"), "quota": _csv_text_sql("task__quota"),
                        "exit_type": _csv_text_sql("exit_type"), "target": _csv_text_sql("taskset__job__target__name")})
    return {f"x_{name}": columns[name] for name in TASKJOB_COLUMNS}


def taskjob_rows(selection: Selection, escape: bool = False) -> QuerySet:
    """The taskjobs-csv rows as a values_list query, in export order (with
    ``escape``, text cells as the CSV writes them)."""
    expressions = _taskjob_expressions(escape)
    # Ordered, so that two exports of the same data are the same file. On ten
    # million rows the sort cost no measurable time next to the join and the
    # formatting of 26 columns (bench/export_rate.py).
    query = (TaskJob.objects.filter(selection.q("taskset__")).annotate(**expressions)
             .order_by("taskset_id", "task__task_id", "job_number").values_list(*expressions))
    if list(query.query.annotation_select) != list(expressions):  # the COPY path relies on this order
        raise RuntimeError("taskjobs-csv: the SELECT does not list the columns in order")
    return query


def taskjobs_csv(selection: Selection, method: str = "auto") -> Iterator[str]:
    """taskjobs-csv in chunks of whole lines. On PostgreSQL the server formats
    the rows (COPY … TO STDOUT, same SELECT); elsewhere, or with
    ``method="python"``, rows come through a server-side cursor and csv."""
    sql, params = taskjob_rows(selection, escape=True).query.sql_with_params()
    if method == "copy" or (method == "auto" and connection.vendor == "postgresql"):
        return _copy_csv(list(TASKJOB_COLUMNS), sql, params)
    return _chunked_lines(list(TASKJOB_COLUMNS), _cursor_rows(sql, params))


def _cursor_rows(sql: str, params) -> Iterator[tuple]:
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield from rows


def _copy_csv(header: list[str], sql: str, params) -> Iterator[str]:
    return (chunk.decode() for chunk in _copy_bytes(header, sql, params))


def _copy_bytes(header: list[str], sql: str, params) -> Iterator[bytes | bytearray]:
    """The CSV as COPY sends it, in chunks of whole lines: UTF-8 bytes (the
    Parquet export parses them as they are; the CSV export decodes them)."""
    buffer = io.StringIO()
    _csv_writer(buffer).writerow(header)
    yield buffer.getvalue().encode()
    connection.ensure_connection()
    chunk = bytearray()
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
            for data in copy:
                chunk += data
                if len(chunk) >= CHUNK_BYTES:
                    yield chunk
                    chunk = bytearray()  # a new one: the one handed on may still be read
    if chunk:
        yield chunk


# -- tasksets-csv -----------------------------------------------------------------

FIRST_MISS_COLUMNS = TaskSet.MISS_COLUMNS
TASKSET_COLUMNS = (
    "job_id", "taskset_id", "variant", "state", "outcome", "successful", "attempts", "target", "machine_id",
    "started_at", "ended_at", "duration_s", "n_tasks", *FIRST_MISS_COLUMNS, *LABEL_COLUMNS,
)
TASK_GROUP = (*TASK_ATTRIBUTES, *TASK_LABEL_COLUMNS)


@dataclass
class _SetRow:
    """One task-set with its tasks, as the exports read it."""

    values: dict
    tasks: list[dict] = field(default_factory=list)


def task_width(selection: Selection) -> int:
    """Tasks in the largest selected set: the number of column groups."""
    largest = Task.objects.filter(selection.q("taskset__")).aggregate(largest=Max("task_id"))["largest"]
    return 0 if largest is None else largest + 1


def taskset_header(width: int) -> list[str]:
    return [*TASKSET_COLUMNS, *(f"task{k}_{name}" for k in range(width) for name in TASK_GROUP)]


def _set_rows(selection: Selection) -> Iterator[_SetRow]:
    """Task-sets with their tasks: two cursors in id order, merged, so no
    more than one chunk of each is ever in memory."""
    # The seeds' Successful: finished with every job EXIT (a late EXIT too).
    not_exit = TaskJob.objects.filter(taskset_id=OuterRef("id")).exclude(exit_type="EXIT")
    sets = selection.tasksets().values(
        "id", "job_id", "variant", "state", "outcome", "attempts", "losses", "machine_id", "started_at",
        "ended_at", "analysis", *FIRST_MISS_COLUMNS, target=F("job__target__name"), any_not_exit=Exists(not_exit),
    ).iterator(chunk_size=CHUNK_ROWS)
    tasks = Task.objects.filter(selection.q("taskset__")).order_by("taskset_id", "task_id").values(
        "taskset_id", "id", "task_id", *Task.FIELDS,
    ).iterator(chunk_size=CHUNK_ROWS)
    pending = next(tasks, None)
    for values in sets:
        row = _SetRow(values)
        while pending is not None and pending["taskset_id"] <= values["id"]:
            if pending["taskset_id"] == values["id"]:
                row.tasks.append(pending)
            pending = next(tasks, None)
        yield row


def _first_miss(values: dict) -> list:
    """The four first-miss cells, all empty when nothing missed."""
    miss = TaskSet.miss_in(values)
    return [None] * len(FIRST_MISS_COLUMNS) if miss is None else [miss.task, miss.job, miss.kind, miss.at_ms]


def _successful(values: dict) -> int | None:
    if values["state"] != TaskSet.State.FINISHED:
        return None
    return int(not values["any_not_exit"])


def _taskset_values(row: _SetRow) -> list:
    values = row.values
    duration = (values["ended_at"] - values["started_at"]).total_seconds() if values["ended_at"] and values["started_at"] else None
    labels = flat_labels(values["analysis"])
    return [
        values["job_id"], values["id"], values["variant"], values["state"], values["outcome"], _successful(values),
        values["attempts"], values["target"], values["machine_id"], _iso(values["started_at"]),
        _iso(values["ended_at"]), duration, len(row.tasks), *_first_miss(values),
        *(labels[name] for name in LABEL_COLUMNS),
    ]


def _task_values(task: dict, per_task: dict) -> list:
    labels = per_task.get(task["task_id"], {})
    attributes = {**task, "quota_bytes": quota_bytes(task["quota"])}
    return [*(attributes[name] for name in TASK_ATTRIBUTES), *(labels.get(name) for name in TASK_LABEL_COLUMNS)]


def tasksets_csv(selection: Selection) -> Iterator[str]:
    """tasksets-csv in chunks of whole lines."""
    header, rows = _taskset_table(selection)
    return _chunked_lines(header, rows)


def _taskset_table(selection: Selection) -> tuple[list[str], Iterator[list]]:
    """The tasksets-csv header and its rows (as lists), read as they are used."""
    width = task_width(selection)
    empty_group = [None] * len(TASK_GROUP)

    def rows():
        for row in _set_rows(selection):
            per_task = task_labels(row.values["analysis"])
            groups = {task["task_id"]: _task_values(task, per_task) for task in row.tasks}
            yield [*_taskset_values(row), *(cell for k in range(width) for cell in groups.get(k, empty_group))]

    return taskset_header(width), rows()


def csv_chunks(format: str, selection: Selection) -> Iterator[str]:
    """The CSV export ``format`` for a StreamingHttpResponse."""
    if format == "taskjobs-csv":
        return taskjobs_csv(selection)
    if format == "tasksets-csv":
        return tasksets_csv(selection)
    raise ExportError("--format", f"{format!r} is not a CSV format; choose taskjobs-csv or tasksets-csv")


# -- parquet ----------------------------------------------------------------------
# The CSVs' columns, each with its type (distributor.parquet.TYPES).

TEXT_COLUMNS = {"pkg", "quota", "exit_type", "target", "state", "outcome", "first_miss_kind", "etm_name",
                "etm_unknown_pkgs", "policy"}
FLAG_COLUMNS = {"deadline_met", "successful", *(name for name in LABEL_COLUMNS if name.endswith(
    ("_applies", "_pass", "_schedulable", "_exact"))), "rta_exact", "etm_calibrated"}
FLOAT_COLUMNS = {"duration_s", "utilisation", "utilisation_max_core", "ll_bound", "hyperbolic_product"}
TIME_COLUMNS = {"started_at", "ended_at"}


def column_type(name: str) -> str:
    """A column's type; a task group's ``task<k>_<attribute>`` has its attribute's."""
    if name.startswith("task") and "_" in name and name[4:name.index("_")].isdigit():
        name = name[name.index("_") + 1:]
    for names, kind in ((TEXT_COLUMNS, "string"), (FLAG_COLUMNS, "int8"), (FLOAT_COLUMNS, "float64"),
                        (TIME_COLUMNS, "timestamp")):
        if name in names:
            return kind
    return "int64"


# distributor.parquet is imported where it is used: Arrow adds some 80 MB to a
# process, which the web server and the machines should not carry for nothing.


def parquet_chunks(format: str, selection: Selection, method: str = "auto") -> Iterator[bytes]:
    """The Parquet export ``format`` a row group at a time, for a StreamingHttpResponse."""
    from distributor import parquet

    schema, batches = _parquet_batches(format, selection, method)
    return parquet.parquet_chunks(schema, batches)


def _parquet_batches(format: str, selection: Selection, method: str = "auto"):
    """(schema, record batches) of a Parquet export. taskjobs on PostgreSQL
    come through the CSV export's COPY, parsed by Arrow (the server formats,
    C++ parses: no Python object per cell); elsewhere, or with
    ``method="python"``, from the same rows the CSVs write."""
    from distributor import parquet

    if format == "taskjobs-parquet":
        schema = parquet.schema([(name, column_type(name)) for name in TASKJOB_COLUMNS])
        sql, params = taskjob_rows(selection).query.sql_with_params()
        if method == "copy" or (method == "auto" and connection.vendor == "postgresql"):
            return schema, parquet.batches_from_csv(schema, _copy_bytes(list(TASKJOB_COLUMNS), sql, params))
        return schema, parquet.batches_from_rows(schema, _cursor_rows(sql, params))
    if format == "tasksets-parquet":
        header, rows = _taskset_table(selection)
        schema = parquet.schema([(name, column_type(name)) for name in header])
        return schema, parquet.batches_from_rows(schema, rows)
    raise ExportError("--format", f"{format!r} is not a Parquet format; choose {' or '.join(PARQUET_FORMATS)}")


# -- sqlite -----------------------------------------------------------------------

FULL_TABLES = {
    "meta": ("key TEXT PRIMARY KEY", "value TEXT"),
    "targets": ("id INTEGER PRIMARY KEY", "name TEXT", "kind TEXT"),
    "machines": ("id INTEGER PRIMARY KEY", "target_id INTEGER", "slot INTEGER", "host TEXT", "state TEXT",
                 "launched_at TEXT", "started_at TEXT", "stopped_at TEXT", "tasksets_done INTEGER",
                 "target_boots INTEGER"),
    "jobs": ("id INTEGER PRIMARY KEY", "name TEXT", "target_id INTEGER", "state TEXT", "variant_count INTEGER",
             '"offset" INTEGER', "tries INTEGER", "priority INTEGER", "finished_count INTEGER",
             "bad_count INTEGER", "created_at TEXT", "started_at TEXT", "ended_at TEXT", "source_name TEXT",
             "spec TEXT"),
    "job_contents": ("job_id INTEGER", "kind TEXT", "name TEXT", "sha256 TEXT", "size INTEGER"),
    "tasksets": ("id INTEGER PRIMARY KEY", "job_id INTEGER", "variant INTEGER", "state TEXT", "outcome TEXT",
                 "successful INTEGER", "attempts INTEGER", "losses INTEGER", "machine_id INTEGER",
                 "started_at TEXT", "ended_at TEXT", "n_tasks INTEGER", "first_miss_task INTEGER",
                 "first_miss_job INTEGER", "first_miss_kind TEXT", "first_miss_ms INTEGER",
                 *(f"{name} {'TEXT' if name in ('etm_name', 'etm_unknown_pkgs', 'policy') else 'REAL'}" for name in LABEL_COLUMNS),
                 "analysis TEXT"),
    "tasks": ("id INTEGER PRIMARY KEY", "taskset_id INTEGER", "task_id INTEGER", "pkg TEXT", "arg1 INTEGER",
              "priority INTEGER", "deadline INTEGER", "period INTEGER", '"offset" INTEGER',
              "numberofjobs INTEGER", "criticaltime INTEGER", "quota TEXT", "quota_bytes INTEGER",
              "caps INTEGER", "cores INTEGER", "coreoffset INTEGER", "c_ms INTEGER", "wcrt_ms INTEGER",
              "rta_exact INTEGER", "sim_wcrt_ms INTEGER"),
    "taskjobs": ("id INTEGER PRIMARY KEY", "taskset_id INTEGER", "task_pk INTEGER", "task_id INTEGER",
                 "job_number INTEGER", "release_ms INTEGER", "start_ms INTEGER", "end_ms INTEGER",
                 "response_ms INTEGER", "exit_type TEXT", "deadline_abs_ms INTEGER", "deadline_met INTEGER"),
}
SEED_TASK_ATTRIBUTES = tuple(f'"{name}"' if name == "offset" else name for name in Task.FIELDS)  # a reserved word


def write_sqlite(path: str | os.PathLike, selection: Selection) -> Path:
    """Write the SQLite export to ``path`` (replaced atomically: a crash
    leaves no half-written file under that name) and return the path."""
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".sqlite3", dir=target.parent)
    os.close(handle)
    try:
        _fill_sqlite(temporary, selection)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _fill_sqlite(path: str, selection: Selection) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        for table, columns in FULL_TABLES.items():
            db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
        _insert(db, "meta", _meta_rows(selection))
        width = _copy_sets_and_tasks(db, selection)
        _insert(db, "taskjobs", _taskjob_table_rows(selection))
        _copy_jobs_targets_machines(db)
        _build_seed_tables(db, max(4, width))
        _create_flat_view(db)
        db.commit()
    finally:
        db.close()


def _insert(db: sqlite3.Connection, table: str, rows: Iterable[Iterable]) -> None:
    width = len(FULL_TABLES[table])
    statement = f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"
    batch = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) >= CHUNK_ROWS:
            db.executemany(statement, batch)
            batch.clear()
    if batch:
        db.executemany(statement, batch)


def _meta_rows(selection: Selection) -> list[tuple]:
    return [("format", "distributor-sqlite-export"), ("version", "1"),
            ("created_at", timezone.now().isoformat()), ("selection", json.dumps(selection.describe()))]


def _copy_sets_and_tasks(db: sqlite3.Connection, selection: Selection) -> int:
    """Fill ``tasksets`` and ``tasks`` in one pass; returns the largest set size."""
    width = 0
    set_batch, task_batch = [], []
    for row in _set_rows(selection):
        values = row.values
        per_task = task_labels(values["analysis"])
        labels = flat_labels(values["analysis"])
        set_batch.append((
            values["id"], values["job_id"], values["variant"], values["state"], values["outcome"],
            _successful(values), values["attempts"],
            values["losses"], values["machine_id"], _iso(values["started_at"]), _iso(values["ended_at"]),
            len(row.tasks), *_first_miss(values),
            *(labels[name] for name in LABEL_COLUMNS),
            json.dumps(values["analysis"]) if values["analysis"] is not None else None,
        ))
        task_batch += [(task["id"], values["id"], task["task_id"], *_task_values(task, per_task)) for task in row.tasks]
        width = max(width, len(row.tasks))
        if len(task_batch) >= CHUNK_ROWS:
            _insert(db, "tasksets", set_batch)
            _insert(db, "tasks", task_batch)
            set_batch, task_batch = [], []
    _insert(db, "tasksets", set_batch)
    _insert(db, "tasks", task_batch)
    return width


def _taskjob_table_rows(selection: Selection) -> Iterator[tuple]:
    rows = TaskJob.objects.filter(selection.q("taskset__")).order_by()
    for pk, taskset, task_pk, task_id, number, release, start, end, exit_type, deadline, met in rows.values_list(
        "id", "taskset_id", "task_id", "task__task_id", "job_number", "release_ms", "start_ms", "end_ms", "exit_type",
        "deadline_abs_ms", "deadline_met",
    ).iterator(chunk_size=CHUNK_ROWS):
        yield (pk, taskset, task_pk, task_id, number, release, start, end,
               None if release is None else end - release, exit_type, deadline, None if met is None else int(met))


def _copy_jobs_targets_machines(db: sqlite3.Connection) -> None:
    """Only the jobs, targets and machines the exported task-sets refer to,
    and of them only fields that say nothing about people or secrets."""
    job_ids = [row[0] for row in db.execute("SELECT DISTINCT job_id FROM tasksets")]
    machine_ids = [row[0] for row in db.execute("SELECT DISTINCT machine_id FROM tasksets WHERE machine_id IS NOT NULL")]
    from distributor.models import Job

    jobs = list(Job.objects.filter(pk__in=job_ids).values_list(
        "id", "name", "target_id", "state", "variant_count", "offset", "tries", "priority", "finished_count",
        "bad_count", "created_at", "started_at", "ended_at", "source_name", "spec"))
    _insert(db, "jobs", [(*job[:10], *map(_iso, job[10:13]), job[13], json.dumps(job[14])) for job in jobs])
    _insert(db, "job_contents", JobContent.objects.filter(job_id__in=job_ids).order_by("job_id", "kind", "name")
            .values_list("job_id", "kind", "name", "sha256", "size"))
    machines = Machine.objects.filter(pk__in=machine_ids).values_list(
        "id", "target_id", "slot", "host", "state", "launched_at", "started_at", "stopped_at", "tasksets_done",
        "target_boots")
    _insert(db, "machines", [(*m[:5], *map(_iso, m[5:8]), *m[8:]) for m in machines])
    target_ids = {job[2] for job in jobs} | {m[1] for m in machines}
    _insert(db, "targets", Target.objects.filter(pk__in=target_ids).values_list("id", "name", "kind"))


def _build_seed_tables(db: sqlite3.Connection, slots: int) -> None:
    """The seeds' layout, built inside SQLite from the full tables: ``Task``
    holds each distinct task once (the seeds deduplicated tasks by all their
    attributes; the id is the first occurrence's ``tasks.id``), ``TaskSet``
    the finished sets with TASK1_ID … TASKn_ID (-1 for empty slots, at least
    four as the seeds' queries expect) and ``Job`` every task-job."""
    partition = ", ".join(SEED_TASK_ATTRIBUTES)
    db.executescript(f"""
        CREATE TABLE Task (Task_ID INTEGER, Priority INT, Deadline INT, Quota INT, CAPS INT, PKG STRING,
            Arg INT, CORES INT, COREOFFSET INT, CRITICALTIME INT, Period INT, Number_of_Jobs INT, OFFSET INT,
            PRIMARY KEY (Task_ID));
        CREATE TABLE TaskSet (Set_ID INTEGER, Successful INT,
            {', '.join(f'TASK{k}_ID INTEGER' for k in range(1, slots + 1))}, PRIMARY KEY (Set_ID));
        CREATE TABLE Job (Set_ID INTEGER, Task_ID INTEGER, Job_ID INTEGER, Start_Date INT, End_Date INT,
            Exit_Value STRING, TaskSet_Task_ID INT, TaskSet_Job_Number INT,
            PRIMARY KEY (Task_ID, Set_ID, Job_ID),
            FOREIGN KEY (Task_ID) REFERENCES Task(Task_ID), FOREIGN KEY (Set_ID) REFERENCES TaskSet(Set_ID));
        CREATE TEMP TABLE canon AS
            SELECT t.id AS id, MIN(t.id) OVER (PARTITION BY {partition}) AS task
            FROM tasks t JOIN tasksets s ON s.id = t.taskset_id WHERE s.state = 'finished';
        CREATE UNIQUE INDEX temp.canon_id ON canon(id);
        INSERT INTO Task SELECT t.id, t.priority, t.deadline, t.quota, t.caps, t.pkg, t.arg1, t.cores,
            t.coreoffset, t.criticaltime, t.period, t.numberofjobs, t."offset"
            FROM tasks t JOIN canon c ON c.id = t.id WHERE c.task = t.id;
        INSERT INTO TaskSet SELECT s.id, s.successful,
            {', '.join(f'COALESCE(MAX(CASE WHEN t.task_id = {k} THEN c.task END), -1)' for k in range(slots))}
            FROM tasksets s JOIN tasks t ON t.taskset_id = s.id JOIN canon c ON c.id = t.id
            WHERE s.state = 'finished' GROUP BY s.id;
        INSERT INTO Job SELECT j.taskset_id, c.task, j.id, j.start_ms, j.end_ms, j.exit_type, j.task_id,
            j.job_number FROM taskjobs j JOIN canon c ON c.id = j.task_pk;
    """)


def _create_flat_view(db: sqlite3.Connection) -> None:
    attributes = ", ".join(f"t.{name}" for name in TASK_ATTRIBUTES).replace("t.offset", 't."offset"')
    db.execute(f"""
        CREATE VIEW taskjobs_flat AS
        SELECT s.job_id, j.taskset_id, s.variant, j.task_id, {attributes}, j.job_number, j.release_ms,
               j.start_ms, j.end_ms, j.response_ms, j.exit_type, j.deadline_abs_ms, j.deadline_met,
               g.name AS target, s.machine_id
        FROM taskjobs j JOIN tasks t ON t.id = j.task_pk JOIN tasksets s ON s.id = j.taskset_id
        JOIN jobs b ON b.id = s.job_id JOIN targets g ON g.id = b.target_id
    """)


# -- one call for the command -----------------------------------------------------


def export(format: str, output: str | os.PathLike, selection: Selection) -> Path:
    """Write export ``format`` to ``output`` (CSV through a temporary file
    renamed at the end, like the SQLite file) and return its path."""
    if format not in FORMATS:
        raise ExportError("--format", f"unknown format {format!r}; choose {', '.join(FORMATS)}")
    if format == "sqlite":
        return write_sqlite(output, selection)
    if format in PARQUET_FORMATS:
        return _write_parquet(format, output, selection)
    target = Path(output)
    handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            for chunk in csv_chunks(format, selection):
                out.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _write_parquet(format: str, output: str | os.PathLike, selection: Selection) -> Path:
    """A Parquet export in a file, renamed into place when complete."""
    from distributor import parquet

    target = Path(output)
    handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".parquet", dir=target.parent)
    os.close(handle)
    try:
        parquet.write_parquet(temporary, *_parquet_batches(format, selection))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
