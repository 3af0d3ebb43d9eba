"""A job's exports as HTTP responses: the job page's links and the API's
(``GET /api/jobs/N/export/FORMAT``, which a token alone reaches) send the same
bytes, built here. CSV streams as it is read; SQLite is built in a file that
is gone once sent (SQLite cannot write to a stream); Parquet streams a row
group at a time."""
from __future__ import annotations

import os
import tempfile

from django.conf import settings
from django.http import FileResponse, HttpResponse, StreamingHttpResponse

from distributor import exports
from distributor.models import Job

CONTENT_TYPES = {"taskjobs-csv": "text/csv; charset=utf-8", "tasksets-csv": "text/csv; charset=utf-8",
                 "sqlite": "application/vnd.sqlite3", "taskjobs-parquet": "application/vnd.apache.parquet",
                 "tasksets-parquet": "application/vnd.apache.parquet"}


def filename(job: Job, format: str) -> str:
    if format == "sqlite":
        return f"job-{job.pk}.sqlite3"
    kind, _, extension = format.partition("-")
    return f"job-{job.pk}-{kind}.{extension}"


def export_response(job: Job, format: str) -> HttpResponse:
    """The export ``format`` (one of ``exports.FORMATS``) of one job, as an attachment."""
    selection = exports.Selection(jobs=(job.pk,))
    name = filename(job, format)
    if format != "sqlite":
        chunks = exports.parquet_chunks if format in exports.PARQUET_FORMATS else exports.csv_chunks
        response = StreamingHttpResponse(chunks(format, selection), content_type=CONTENT_TYPES[format])
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    folder = settings.DATA_DIR / "exports"
    folder.mkdir(exist_ok=True)
    handle, path = tempfile.mkstemp(prefix=f"job-{job.pk}-", suffix=".sqlite3", dir=folder)
    os.close(handle)
    try:
        exports.write_sqlite(path, selection)
        stream = open(path, "rb")  # noqa: SIM115 - FileResponse closes it
    finally:
        os.unlink(path)  # the open handle keeps the data until the response is sent
    return FileResponse(stream, as_attachment=True, filename=name, content_type=CONTENT_TYPES[format])
