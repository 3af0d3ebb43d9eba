"""The API as HTTP (issue 16, point 8): every GET route answers HEAD with the
GET's status and headers and no body; a malformed multipart body is a JSON
error naming the cause, never Django's HTML page."""
from __future__ import annotations

import json

import pytest

from bench.web_pages import build
from webapp.models import ApiToken


@pytest.fixture
def auth(alice):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 'protocol')[1]}"}


@pytest.fixture
def job(alice):
    return build(5, 1, owner=alice)["job"]


def get_routes(job) -> list[str]:
    taskset = job.tasksets.order_by("pk").first()
    return ["/api/openapi.json", "/api/status", "/api/jobs", f"/api/jobs/{job.pk}", f"/api/jobs/{job.pk}/tasksets",
            f"/api/tasksets/{taskset.pk}", f"/api/jobs/{job.pk}/export/tasksets-csv"]


def test_every_get_route_answers_head_like_get_without_a_body(client, auth, job):
    for url in get_routes(job):
        got = client.get(url, **auth)
        head = client.head(url, **auth)
        assert head.status_code == got.status_code == 200, url
        assert head["Content-Type"] == got["Content-Type"], url
        assert b"".join(head) == b"" if head.streaming else head.content == b"", url


def test_head_on_a_missing_row_is_its_404(client, auth, db):
    assert client.head("/api/jobs/999999", **auth).status_code == 404


def test_head_on_a_post_only_route_is_405_and_allow_names_the_methods(client, auth, db):
    response = client.head("/api/check", **auth)
    assert response.status_code == 405 and response["Allow"] == "POST"
    put = client.put("/api/jobs", **auth)
    assert put.status_code == 405 and put["Allow"] == "GET, POST, HEAD"


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data", b"no boundary"),
    ("multipart/form-data; boundary=", b"--\r\n"),
    ("multipart/form-data; boundary=" + "b" * 300, b"x"),
    ("multipart/form-data; boundary=\x00", b"x"),
])
def test_a_malformed_multipart_body_is_a_json_400(client, auth, db, content_type, body):
    for url in ("/api/check", "/api/jobs"):
        response = client.generic("POST", url, body, content_type=content_type, **auth)
        assert response.status_code == 400, (url, response.content[:200])
        assert response["Content-Type"] == "application/json"
        assert "multipart" in response.json()["errors"]["body"]


def test_too_many_multipart_fields_is_a_json_400(client, auth, db, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"f{i}": "x" for i in range(20)}
    response = client.post("/api/check", fields, **auth)
    assert response.status_code == 400 and "multipart" in response.json()["errors"]["body"]


def test_too_many_multipart_files_is_a_json_400(client, auth, db, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = {f"file{i}": SimpleUploadedFile(f"{i}.json", b"{}") for i in range(4)}
    response = client.post("/api/check", files, **auth)
    assert response.status_code == 400 and "multipart" in response.json()["errors"]["body"]


@pytest.mark.parametrize("url, field", [
    ("/api/jobs?owner=a%00b", "owner"), ("/api/machines?target=a%00", "target"), ("/api/audit?actor=%00", "actor"),
    ("/api/audit?action=x&action=a%00b", "action"), ("/api/slots/dry%00/0", "path"),
])
def test_a_nul_character_in_the_url_is_a_400_naming_where(client, staff, url, field):
    # PostgreSQL holds no NUL in text: these reached a filter and were 500s there.
    headers = {"Authorization": f"Bearer {ApiToken.issue(staff, 'nul')[1]}"}
    response = client.post(url, headers=headers) if "/slots/" in url else client.get(url, headers=headers)
    assert response.status_code == 400 and response.json() == {"errors": {field: "must be text without control characters (it holds a NUL)"}}


@pytest.mark.parametrize("url, field", [("/jobs/?q=a%00b", "q"), ("/audit/?action=%00", "action")])
def test_a_page_refuses_a_nul_character_in_its_query_naming_the_parameter(client, staff, url, field):
    client.force_login(staff)
    response = client.get(url)
    assert response.status_code == 400 and f"{field}: must be text without control characters (it holds a NUL)" in response.content.decode()


@pytest.mark.parametrize("url, body, field", [
    ("/api/slots/dry/0", {"health": "maintenance", "cause": "disk\u0000"}, "cause"),
    ("/api/etms/genode-defaults/calibrate", {"target": "\u0000", "pkg": "hey", "args": "1:2"}, "target"),
    ("/api/targets", {"name": "t", "kind": "stdio", "settings": {"print": ["\u0000"]}}, "settings"),
    ("/api/slots/dry/0", {"health": "maintenance", "ca\u0000use": "x"}, "ca\\0use"),
])
def test_a_nul_character_in_a_json_body_is_a_400_naming_its_field(client, staff, stdio_target, url, body, field):
    # These reached a lookup or a save: a 500 on PostgreSQL, which holds no NUL in text.
    headers = {"Authorization": f"Bearer {ApiToken.issue(staff, 'nul')[1]}"}
    response = client.post(url, json.dumps(body), content_type="application/json", headers=headers)
    assert response.status_code == 400 and response.json() == {"errors": {field: "must be text without control characters (it holds a NUL)"}}
