"""CSV cells a spreadsheet would take for formulas (issue 16, point 9): a text
cell starting with =, +, - or @ is written with a leading apostrophe, in both
CSVs and on both of taskjobs-csv's paths (PostgreSQL's COPY and Python write
the same bytes); numbers such as -5 stay numbers and pandas reads numeric
columns as before."""
from __future__ import annotations

import io

import pandas as pd
import pytest
from django.db import connection

from distributor import exports
from distributor.exports import Selection, csv_text
from distributor.models import Target, Task, TaskJob
from tests.test_exports import results  # noqa: F401 - the fixture

HOSTILE = {"pkg": "=cmd|'/c'!A1", "quota": "+1M", "exit_type": "-EXIT", "target": "@SUM(A1)"}


@pytest.fixture
def hostile(results):  # noqa: F811 - the fixture imported above
    """Names no validation lets in today, written straight into the rows."""
    Task.objects.filter(task_id=0).update(pkg=HOSTILE["pkg"], quota=HOSTILE["quota"])
    TaskJob.objects.filter(job_number=0).update(exit_type=HOSTILE["exit_type"])
    Target.objects.update(name=HOSTILE["target"])
    TaskJob.objects.filter(job_number=1).update(release_ms=-5, start_ms=-4)
    return results


@pytest.mark.parametrize("value, written", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-x", "'-x"), ("@x", "'@x"), ("'=x", "'=x"), ("a=b", "a=b"),
    (-5, -5), (-5.5, -5.5), (None, None), ("", ""),
])
def test_only_text_that_starts_like_a_formula_is_escaped(value, written):
    assert csv_text(value) == written


def read(chunks) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("".join(chunks)))


def test_taskjobs_csv_escapes_text_cells_and_keeps_numbers(hostile):
    frame = read(exports.taskjobs_csv(Selection(), method="python"))
    assert set(frame["pkg"]) >= {"'" + HOSTILE["pkg"]}
    assert set(frame["quota"]) >= {"'+1M"} and set(frame["exit_type"]) >= {"'-EXIT"}
    assert set(frame["target"]) == {"'@SUM(A1)"}
    assert frame["release_ms"].min() == -5 and frame["start_ms"].dtype.kind == "i"
    assert frame["quota_bytes"].dtype.kind in "if"  # "+1M" in bytes, read as a number


def test_tasksets_csv_escapes_text_cells_and_keeps_numbers(hostile):
    frame = read(exports.tasksets_csv(Selection()))
    assert set(frame["target"]) == {"'@SUM(A1)"}
    assert set(frame["task0_pkg"].dropna()) == {"'" + HOSTILE["pkg"]}
    assert frame["attempts"].dtype.kind == "i" and frame["task0_period"].dtype.kind in "if"


def test_the_sqlite_export_keeps_names_as_they_are(hostile, tmp_path):
    import sqlite3

    path = exports.write_sqlite(tmp_path / "x.sqlite3", Selection())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT DISTINCT name FROM targets").fetchall() == [(HOSTILE["target"],)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_and_python_escape_alike(hostile):
    copied = "".join(exports.taskjobs_csv(Selection(), method="copy"))
    written = "".join(exports.taskjobs_csv(Selection(), method="python"))
    assert copied == written
    assert "'=cmd|'/c'!A1" in copied and ",-5," in copied
