"""Task binaries and boot images through the API: listed for everyone,
uploaded by staff with the client's sha256, which must be the file's: a
mismatch is a 400 naming sha256 and nothing is stored."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from distributor.models import AuditEntry, Binary, Blob, BootImage


def _upload(client, url: str, token: str | None, data: bytes, filename: str, **fields):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(url, {"file": SimpleUploadedFile(filename, data), **fields}, headers=headers)


def _stored_files() -> list[str]:
    """The contents in the database (uploads live there, issue 18)."""
    return list(Blob.objects.values_list("sha256", flat=True))


def test_staff_upload_a_binary_with_its_sha256(client, staff_token, staff):
    data = b"\x7fELF" + bytes(range(256)) * 64
    digest = hashlib.sha256(data).hexdigest()
    response = _upload(client, "/api/binaries", staff_token, data, "hey", sha256=digest.upper())
    assert response.status_code == 201, response.json()
    assert response.json() | {"uploaded_at": None} == {"name": "hey", "sha256": digest, "size": len(data),
                                                      "uploaded_by": "sam", "replaced": False, "uploaded_at": None}
    stored = Binary.objects.get(name="hey")
    assert (stored.sha256, stored.size, stored.uploaded_by) == (digest, len(data), staff)
    assert b"".join(stored.blob().chunks()) == data
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.subject, entry.changes) == (
        "sam", "binary-upload", "hey", {"sha256": digest, "size": len(data), "replaced": False})


def test_a_large_image_is_hashed_on_its_way_to_disk(client, staff_token, settings):
    """Past FILE_UPLOAD_MAX_MEMORY_SIZE Django streams the upload to a
    temporary file; the hash is taken from the same stream."""
    data = bytes(range(251)) * (settings.FILE_UPLOAD_MAX_MEMORY_SIZE // 251 + 1000)
    response = _upload(client, "/api/images", staff_token, data, "image.elf", name="kernel.elf",
                       sha256=hashlib.sha256(data).hexdigest())
    assert response.status_code == 201, response.json()
    assert BootImage.objects.get().name == "kernel.elf" and BootImage.objects.get().size == len(data)


def test_a_wrong_sha256_is_400_and_nothing_is_stored(client, staff_token):
    data = b"the real bytes"
    response = _upload(client, "/api/binaries", staff_token, data, "hey", sha256=hashlib.sha256(b"other").hexdigest())
    assert response.status_code == 400
    assert hashlib.sha256(data).hexdigest() in response.json()["errors"]["sha256"]
    assert not Binary.objects.exists() and _stored_files() == [] and not AuditEntry.objects.exists()


def test_a_mismatch_keeps_the_upload_it_would_have_replaced(client, staff_token):
    first = b"version one"
    assert _upload(client, "/api/binaries", staff_token, first, "hey",
                   sha256=hashlib.sha256(first).hexdigest()).status_code == 201
    response = _upload(client, "/api/binaries", staff_token, b"version two", "hey", sha256=hashlib.sha256(first).hexdigest())
    assert response.status_code == 400 and "sha256" in response.json()["errors"]
    assert Binary.objects.get().sha256 == hashlib.sha256(first).hexdigest() and len(_stored_files()) <= 1
    second = b"version two"
    replaced = _upload(client, "/api/binaries", staff_token, second, "hey", sha256=hashlib.sha256(second).hexdigest())
    assert replaced.status_code == 200 and replaced.json()["replaced"] is True
    assert Binary.objects.get().sha256 == hashlib.sha256(second).hexdigest()


@pytest.mark.parametrize("filename, fields, field", [
    ("hey", {}, "sha256"),
    ("hey", {"sha256": "abc"}, "sha256"),
    ("a-name-longer-than-15", {"sha256": "0" * 64}, "name"),
    ("hey", {"name": "../etc", "sha256": "0" * 64}, "name"),
])
def test_bad_uploads_get_400_naming_the_field(client, staff_token, filename, fields, field):
    response = _upload(client, "/api/binaries", staff_token, b"bytes", filename, **fields)
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    assert not Binary.objects.exists() and _stored_files() == []


def test_an_empty_file_or_none_is_refused(client, staff_token):
    response = _upload(client, "/api/binaries", staff_token, b"", "hey", sha256=hashlib.sha256(b"").hexdigest())
    assert response.status_code == 400 and "file" in response.json()["errors"]
    response = client.post("/api/binaries", {"sha256": "0" * 64}, headers={"Authorization": f"Bearer {staff_token}"})
    assert response.status_code == 400 and "file" in response.json()["errors"]
    response = client.post("/api/binaries", "{}", content_type="application/json",
                           headers={"Authorization": f"Bearer {staff_token}"})
    assert response.status_code == 415


def test_a_file_over_the_kinds_limit_is_refused(client, staff_token, settings):
    settings.BINARY_MAX_BYTES = 1024
    data = b"x" * 2048
    response = _upload(client, "/api/binaries", staff_token, data, "hey", sha256=hashlib.sha256(data).hexdigest())
    assert response.status_code == 400 and "file" in response.json()["errors"]
    assert not Binary.objects.exists()


def test_only_staff_upload_but_everyone_lists(client, token, staff_token):
    data = b"bytes"
    assert _upload(client, "/api/binaries", token, data, "hey", sha256=hashlib.sha256(data).hexdigest()).status_code == 403
    assert not Binary.objects.exists()
    _upload(client, "/api/binaries", staff_token, data, "hey", sha256=hashlib.sha256(data).hexdigest())
    listing = client.get("/api/binaries", headers={"Authorization": f"Bearer {token}"}).json()
    assert [(row["name"], row["sha256"]) for row in listing["results"]] == [("hey", hashlib.sha256(data).hexdigest())]
    assert client.get("/api/images", headers={"Authorization": f"Bearer {token}"}).json()["count"] == 0


def test_a_browser_session_uploads_with_the_csrf_token(staff):
    """A session request's CSRF check reads the body before the view: the
    hash must already be taken on that first read."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    browser.get("/files/")
    data = b"from the browser"
    fields = {"file": SimpleUploadedFile("hey", data), "sha256": hashlib.sha256(data).hexdigest()}
    assert browser.post("/api/binaries", fields).status_code == 403  # no CSRF token
    response = browser.post("/api/binaries", {**fields, "file": SimpleUploadedFile("hey", data)},
                            headers={"X-CSRFToken": browser.cookies["csrftoken"].value})
    assert response.status_code == 201, response.json()
