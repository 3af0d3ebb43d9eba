"""Every export a job offers downloads with a token alone, streamed, the same
bytes as from the job page; the API's links point there and the schema
documents them (issue 17, point 2)."""
from __future__ import annotations

import sqlite3

import pytest

from bench.web_pages import build
from distributor import exports


@pytest.fixture
def job(alice):
    return build(12, 2, owner=alice)["job"]


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def sqlite_rows(data: bytes, tmp_path, name: str) -> dict:
    """Every table's rows, but the export's creation time."""
    path = tmp_path / name
    path.write_bytes(data)
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in tables
                if table != "meta"} | {"meta": db.execute("SELECT * FROM meta WHERE key != 'created_at'").fetchall()}
    finally:
        db.close()


@pytest.mark.parametrize("format", exports.FORMATS)
def test_every_export_downloads_with_the_token_alone_as_from_the_web(client, job, token, alice, format, tmp_path):
    links = client.get(f"/api/jobs/{job.pk}", headers={"Authorization": f"Bearer {token}"}).json()["links"]["exports"]
    assert set(links) == set(exports.FORMATS)
    assert links[format] == f"http://testserver/api/jobs/{job.pk}/export/{format}"
    by_token = client.get(links[format], headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 200, by_token.content
    assert not client.session.get("_auth_user_id")  # the token alone: no session
    client.force_login(alice)
    from_web = client.get(f"/jobs/{job.pk}/export/{format}")
    assert from_web.status_code == 200
    assert by_token["Content-Type"] == from_web["Content-Type"]
    assert by_token["Content-Disposition"] == from_web["Content-Disposition"]
    if format == "sqlite":  # built afresh each time: the same rows, another creation time
        assert sqlite_rows(body(by_token), tmp_path, "a") == sqlite_rows(body(from_web), tmp_path, "b")
    else:
        assert by_token.streaming
        data = body(by_token)
        assert data == body(from_web) and data.count(b"\n") > 12


def test_a_csv_export_streams_in_chunks(client, job, token, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_BYTES", 1024)
    response = client.get(f"/api/jobs/{job.pk}/export/taskjobs-csv", headers={"Authorization": f"Bearer {token}"})
    chunks = list(response.streaming_content)
    assert len(chunks) > 3 and b"".join(chunks).startswith(b"job_id,taskset_id,variant,task_id,")


@pytest.mark.parametrize("url, status", [("/api/jobs/{job}/export/xlsx", 404), ("/api/jobs/999/export/sqlite", 404)])
def test_unknown_jobs_and_formats_get_404_as_json(client, job, token, url, status):
    response = client.get(url.format(job=job.pk), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status and response.json()["errors"]


def test_without_a_token_an_export_gets_401_not_the_login_page(client, job):
    response = client.get(f"/api/jobs/{job.pk}/export/taskjobs-csv")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"/api/jobs/{job.pk}/export/taskjobs-csv",
                      headers={"Authorization": "Bearer dst_wrong"}).status_code == 401


def test_the_schema_documents_the_exports(client, token):
    schema = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    operation = schema["paths"]["/jobs/{job_id}/export/{format}"]["get"]
    formats = next(p for p in operation["parameters"] if p["name"] == "format")["schema"]["enum"]
    assert formats == list(exports.FORMATS)
    assert {"text/csv", "application/vnd.sqlite3"} <= set(operation["responses"]["200"]["content"])
    assert set(schema["components"]["schemas"]["Job"]["properties"]["links"]["properties"]["exports"]["properties"]) == set(
        exports.FORMATS)
