"""taskjobs-parquet and tasksets-parquet: the CSVs' columns and rows, typed,
a row group at a time; from the command, the web and the API (issue 17,
point 5). Downloads by token: test_export_by_token.py."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.db import connection

from distributor import exports, parquet
from distributor.exports import Selection
from distributor.models import TaskJob
from tests.test_exports import results  # noqa: F401 - the fixture: two jobs, sets of 1 to 4 tasks, labels

TIMES = ["started_at", "ended_at"]


def table(format: str, selection: Selection = Selection(), **kwargs) -> pa.Table:
    return pq.read_table(io.BytesIO(b"".join(exports.parquet_chunks(format, selection, **kwargs))))


def csv_frame(format: str, selection: Selection = Selection()) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("".join(exports.csv_chunks(format.replace("parquet", "csv"), selection))))


@pytest.mark.parametrize("format", exports.PARQUET_FORMATS)
def test_the_columns_and_rows_are_the_csvs(results, format):  # noqa: F811
    frame = table(format).to_pandas()
    expected = csv_frame(format)
    assert list(frame.columns) == list(expected.columns)
    assert len(frame) == len(expected) > 0
    for column in TIMES if format == "tasksets-parquet" else []:
        expected[column] = pd.to_datetime(expected[column], utc=True).astype(frame[column].dtype)
    texts = frame.select_dtypes("object").columns  # the CSV cannot tell an empty text from none
    frame[texts] = frame[texts].mask(frame[texts].isna() | (frame[texts] == ""), np.nan)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_taskjob_columns_are_typed(results):  # noqa: F811
    schema = table("taskjobs-parquet").schema
    assert schema.names == list(exports.TASKJOB_COLUMNS)
    types = {field.name: field.type for field in schema}
    assert all(types[name] == pa.int64() for name in ("job_id", "taskset_id", "variant", "release_ms", "end_ms",
                                                      "response_ms", "quota_bytes", "machine_id"))
    assert all(types[name] == pa.string() for name in ("pkg", "quota", "exit_type", "target"))
    assert types["deadline_met"] == pa.int8()


def test_taskset_columns_are_typed_task_groups_included(results):  # noqa: F811
    schema = table("tasksets-parquet").schema
    assert schema.names == exports.taskset_header(4)
    types = {field.name: field.type for field in schema}
    assert types["started_at"] == pa.timestamp("us", tz="UTC") and types["duration_s"] == pa.float64()
    assert (types["utilisation"], types["etm_name"], types["rta_schedulable"]) == (pa.float64(), pa.string(), pa.int8())
    assert (types["task3_pkg"], types["task3_period"], types["task3_c_ms"], types["task3_rta_exact"]) == (
        pa.string(), pa.int64(), pa.int64(), pa.int8())
    frame = table("tasksets-parquet").to_pandas()
    labelled = frame[frame["state"] == "finished"]
    assert labelled["utilisation"].notna().all() and labelled["task0_c_ms"].notna().all()


def test_numeric_columns_load_as_numbers_in_pandas(results, tmp_path):  # noqa: F811
    output = tmp_path / "tj.parquet"
    call_command("export", "--format", "taskjobs-parquet", "--output", str(output), stdout=io.StringIO())
    frame = pd.read_parquet(output)
    numeric = [name for name in exports.TASKJOB_COLUMNS if exports.column_type(name) != "string"]
    assert all(pd.api.types.is_numeric_dtype(frame[name]) for name in numeric)
    assert len(frame) == TaskJob.objects.count()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tj.parquet"]  # no temporaries


def test_row_groups_stream_one_at_a_time(results, monkeypatch):  # noqa: F811
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 5)
    monkeypatch.setattr(parquet, "BATCH_ROWS", 2)
    chunks = exports.parquet_chunks("taskjobs-parquet", Selection(), method="python")
    assert iter(chunks) is chunks  # a generator, not a built file
    collected = list(chunks)
    file = pq.ParquetFile(io.BytesIO(b"".join(collected)))
    sizes = [file.metadata.row_group(k).num_rows for k in range(file.metadata.num_row_groups)]
    assert sum(sizes) == TaskJob.objects.count() and len(sizes) > 3
    assert all(5 <= size < 5 + 2 for size in sizes[:-1])  # a row group: ROW_GROUP_ROWS, less than a batch more
    assert len(collected) >= file.metadata.num_row_groups  # each group handed on as it was written


def test_an_empty_selection_is_a_valid_file_with_the_columns(results):  # noqa: F811
    empty = table("taskjobs-parquet", Selection(states=("queued",)))
    assert empty.num_rows == 0 and empty.schema.names == list(exports.TASKJOB_COLUMNS)


def test_the_job_page_links_both_parquet_exports(client, results, alice):  # noqa: F811
    client.force_login(alice)
    job = results["first"]
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    for format in exports.PARQUET_FORMATS:
        assert f"/jobs/{job.pk}/export/{format}" in page
    response = client.get(f"/jobs/{job.pk}/export/taskjobs-parquet")
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert f'filename="job-{job.pk}-taskjobs.parquet"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == b"".join(
        exports.parquet_chunks("taskjobs-parquet", Selection(jobs=(job.pk,))))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_and_python_paths_write_the_same_table(results):  # noqa: F811
    assert table("taskjobs-parquet", method="copy").equals(table("taskjobs-parquet", method="python"))
