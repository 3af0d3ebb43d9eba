"""Depth and size limits before parsing (issue 16, point 2): JSON and YAML
nested deeper than 32 are refused wherever a user's document is read (a
task-set file, the admission goal, a target's settings, an API body), with
the field named and never a 500; the web submission refuses a body over its
limit before anything reads it, a too-large pasted text at its field, and the
hidden file name by the API's rules."""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from distributor import taskfile
from distributor.models import Job, Target
from tests.conftest import taskset_file
from webapp.models import ApiToken

DEEP = "[" * 100_000 + "]" * 100_000
FILE = taskset_file().decode()
MB = 2**20


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def form(client, alice, stdio_target):
    client.force_login(alice)
    return {"target": "dry", "offset": "0", "priority": "0", "tries": "", "admission": "", "name": "", "text": FILE,
            "action": "check"}


@pytest.fixture
def token(alice):
    return ApiToken.issue(alice, "limits")[1]


def errors_of(page: str, field: str) -> str:
    block = re.search(rf'data-field="{field}">(.*?)</ul>', page, re.S)
    return " ".join(re.findall(r"<li>(.*?)</li>", block.group(1), re.S)) if block else ""


# -- depth ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [32, 33])
def test_json_and_yaml_are_read_to_a_depth_of_32(depth):
    documents = {
        "json": nested(depth),
        "yaml flow": "{a: " * depth + "1" + "}" * depth,
        "yaml block": "".join("  " * level + "-\n" for level in range(depth)),  # a list in a list …, one a line
    }
    for kind, text in documents.items():
        if depth <= 32:
            (taskfile.load_json if kind == "json" else taskfile._read_yaml)(text.encode())
            continue
        if kind == "json":
            with pytest.raises(taskfile.DepthError, match=r"nested too deeply \(33 levels; the limit is 32\)"):
                taskfile.load_json(text)
        else:
            with pytest.raises(taskfile.TaskFileError, match=r"file: nested too deeply"):
                taskfile._read_yaml(text.encode())


def test_depth_is_judged_outside_strings():
    assert taskfile.json_depth('{"a": "[[[[{{{{\\"]", "b": [[1]]}') == 3
    assert taskfile.load_json('{"s": "' + "[" * 1000 + '"}') == {"s": "[" * 1000}


def test_a_deep_admission_on_the_form_is_refused_at_its_field(client, form):
    response = client.post("/submit/", {**form, "admission": DEEP})
    assert response.status_code == 400
    assert "nested too deeply (100000 levels; the limit is 32)" in errors_of(response.content.decode(), "admission")
    assert not Job.objects.exists()


def test_a_deep_admission_in_the_api_is_refused_naming_it(client, token, stdio_target):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    multipart = client.post("/api/check", {"file": _upload(), "admission": DEEP}, **auth)
    assert multipart.status_code == 400 and "nested too deeply" in multipart.json()["errors"]["admission"]
    body = '{"file": %s, "admission": %s}' % (json.dumps(FILE), DEEP)
    for url in ("/api/check", "/api/jobs"):
        response = client.post(url, body, content_type="application/json", **auth)
        assert response.status_code == 400 and "nested too deeply" in response.json()["errors"]["body"]
    shallow = '{"file": %s, "admission": {"goal": %s}}' % (json.dumps(FILE), nested(30))  # 32 in all
    response = client.post("/api/check", shallow, content_type="application/json", **auth)
    assert response.status_code == 400 and "admission" in response.json()["errors"]  # read, then refused as not flat
    assert not Job.objects.exists()


def _upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("t.json", FILE.encode())


def test_deep_target_settings_are_refused_on_the_page_the_admin_and_the_command_line(client, staff):
    client.force_login(staff)
    form = {"name": "deep", "kind": "stdio", "settings": '{"print": %s}' % DEEP, "addresses": "", "host": ""}
    response = client.post("/targets/new", form)
    assert response.status_code == 400
    assert "nested too deeply" in response.content.decode()
    staff.is_superuser = True
    staff.save()
    response = client.post("/admin/distributor/target/add/", form)
    assert response.status_code == 200 and "nested too deeply" in response.content.decode()
    with pytest.raises(CommandError, match=r"settings.print: nested too deeply"):
        call_command("target", "add", "deep", "--kind", "stdio", "--set", f"print={DEEP}")
    with pytest.raises(Exception, match="settings"):
        Target(name="deep", kind="stdio", settings={"print": json.loads(nested(40))}).full_clean()
    assert not Target.objects.filter(name="deep").exists()


def test_a_deep_admission_on_the_command_line_is_refused(tmp_path, stdio_target):
    path = tmp_path / "t.json"
    path.write_text(FILE)
    with pytest.raises(CommandError, match=r"--admission: nested too deeply"):
        call_command("submit", str(path), "--admission", DEEP)
    assert not Job.objects.exists()


def test_stdio_print_is_a_boolean(db):
    with pytest.raises(Exception, match="must be true or false"):
        Target(name="dry2", kind="stdio", settings={"print": 10**400}).full_clean()


# -- size ----------------------------------------------------------------------------


class Unread:
    """A body that counts what the server read of it."""

    def __init__(self, data: bytes):
        self.data, self.read_bytes = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.read_bytes if size is None or size < 0 else size
        out = self.data[self.read_bytes:self.read_bytes + size]
        self.read_bytes += len(out)
        return out

    def readline(self, size: int = -1) -> bytes:
        return self.read(1)


def test_the_form_refuses_a_body_over_its_limit_before_the_csrf_check_reads_it(alice, stdio_target, settings):
    """50 MB used to be spooled to DATA_DIR/tmp before the 5 MB limit said no."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/submit/")  # the CSRF cookie: with it, CsrfViewMiddleware would read the body
    body = Unread(b"x" * (50 * MB))
    spooled = set(settings.FILE_UPLOAD_TEMP_DIR.iterdir())
    response = client.generic("POST", "/submit/", b"", **{
        "wsgi.input": body, "CONTENT_LENGTH": str(len(body.data)),
        "CONTENT_TYPE": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    page = response.content.decode()
    assert "the request is 52,428,800 bytes; a task-set file or a pasted text may be at most 5,242,880 bytes" \
        in errors_of(page, "file")
    assert "Nothing was stored" in page
    assert body.read_bytes == 0
    assert set(settings.FILE_UPLOAD_TEMP_DIR.iterdir()) == spooled
    assert not Job.objects.exists()


def test_a_logged_out_oversized_post_goes_to_the_login_page(client, db):
    response = client.generic("POST", "/submit/", b"", CONTENT_LENGTH=str(50 * MB), CONTENT_TYPE="text/plain")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_other_pages_and_the_api_refuse_an_oversized_body_unread(client, alice, token):
    client.force_login(alice)
    response = client.generic("POST", "/jobs/1/cancel", b"", CONTENT_LENGTH=str(50 * MB), CONTENT_TYPE="text/plain")
    assert response.status_code == 413 and b"the limit here is" in response.content
    response = client.generic("POST", "/api/jobs", b"", CONTENT_LENGTH=str(50 * MB), CONTENT_TYPE="application/json",
                              HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 413 and "at most" in response.json()["errors"]["body"]


def test_a_pasted_text_over_the_limit_is_refused_at_its_field(client, form):
    text = FILE + " " * (6 * MB)
    response = client.post("/submit/", {**form, "text": text})
    assert response.status_code == 400
    assert re.search(r"is 6,29\d,\d{3} bytes; the limit is 5,242,880 bytes", errors_of(response.content.decode(), "text"))
    assert not Job.objects.exists()


@pytest.mark.parametrize("filename, message", [
    ("x" * 10_000 + ".json", "must be a string of at most 255 characters"),
    ("evil\x00.json", "Null characters are not allowed"),
    ("evil\x1b[31m.json", "without control characters"),
])
def test_the_hidden_file_name_follows_the_apis_rules(client, form, filename, message):
    for action in ("check", "submit"):
        response = client.post("/submit/", {**form, "filename": filename, "action": action})
        assert response.status_code == 400
        assert message in errors_of(response.content.decode(), "filename")
    assert not Job.objects.exists()


def test_a_file_name_of_255_characters_is_kept_whole(client, form):
    response = client.post("/submit/", {**form, "filename": "f" * 250 + ".json", "action": "submit"})
    assert response.status_code == 302
    assert Job.objects.get().source_name == "f" * 250 + ".json"
