"""The bad-input corpus (issue 8, item 4): malformed and hostile inputs, each
with the reaction it must get.

Task-set files (tests/corpus/taskfiles/, plus the large ones made here at run
time) go through all three ways in: the command line, the API and the web
form; each must be refused with its error path and message, and nothing may
be stored. API requests must get the right 4xx with a body naming the field
or cause, never a 500. A target's protocol messages (tests/corpus/events/ and
framing faults made here) must end in a TargetFailure naming the cause; a few
of them also run through one machine in-process, which must retry the
task-set with the cause on record and carry on. tests/corpus/README.md lists
every case.
"""
from __future__ import annotations

import html
import json
import re
import signal
import socket
import struct
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from distributor.files import UploadedFiles
from distributor.hosts import beat
from distributor.machine import run_machine
from distributor.models import Attempt, Binary, Blob, DistributorConfig, Job, Machine, Target, Task, TaskJob, TaskSet
from distributor.queue import submit_job
from sessions import SessionInfo, TargetFailure, get_session_class
from sessions.events import EventTracker
from tests.cluster import join_machine_threads
from tests.peer import events_xml, frame
from webapp.models import ApiToken

pytestmark = pytest.mark.corpus  # hundreds of cases: make test runs them, make test-fast does not

CORPUS = Path(__file__).parent / "corpus"
MB = 2**20
PKG = "must be 1-15 ASCII letters, digits"


def stored() -> tuple[int, ...]:
    """Every row a submission or a run could leave behind."""
    return tuple(model.objects.count() for model in (Job, TaskSet, Task, Attempt, TaskJob))


@contextmanager
def deadline(seconds: float):
    """A hard bound: a case that hangs fails instead of stalling the run."""
    def expire(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s: hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Hundreds of named users are made here; a slow password hash would cost minutes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# == task-set files ==============================================================

T = "tasksets[0].tasks[0]"
# file: (path of the error, pattern of its message)
TASKFILES = {
    # XML: DTDs and entities are refused before anything expands or is fetched
    "xml-billion-laughs.xml": ("file", r"refused XML: DTDForbidden"),
    "xml-quadratic-blowup.xml": ("file", r"refused XML: DTDForbidden"),
    "xml-external-entity.xml": ("file", r"refused XML: DTDForbidden"),
    "xml-external-dtd.xml": ("file", r"refused XML: DTDForbidden"),
    "xml-parameter-entity.xml": ("file", r"refused XML: DTDForbidden"),
    "xml-truncated.xml": ("file", r"invalid XML: no element found: line 1"),
    "xml-wrong-root.xml": ("file", r"the root element must be <taskset>, not <tasks>"),
    "xml-unknown-element.xml": ("taskset.aperiodictask", r"unknown element; expected <periodictask>"),
    "xml-unknown-field.xml": (f"{T}.colour", r"unknown field"),
    "xml-wrong-id.xml": ("taskset.periodictask[0].id", r"must be 0: ids are 0..n-1 in order"),
    "xml-non-ascii-pkg.xml": (f"{T}.pkg", PKG),
    "xml-negative-period.xml": (f"{T}.period", r"must be ≥ 0"),
    "xml-huge-number.xml": (f"{T}.period", r"must be an integer"),
    "xml-utf16.xml": (f"{T}.period", r"must be ≥ 0"),  # UTF-16 is legal XML: it is read, then checked
    # JSON
    "json-truncated.json": ("file", r"invalid JSON at line 10 column 1"),
    "json-huge-number-400-digits.json": (f"{T}.period", r"must be ≤ 4294967295"),
    "json-2-pow-64.json": (f"{T}.period", r"must be ≤ 4294967295"),
    "json-float-overflow.json": (f"{T}.period", r"must be an integer, not float"),
    "json-nan.json": (f"{T}.period", r"must be an integer, not float"),
    "json-numberofjobs-0.json": (f"{T}.numberofjobs", r"must be ≥ 1"),
    "json-period-negative.json": (f"{T}.period", r"must be ≥ 0"),
    "json-caps-0.json": (f"{T}.caps", r"must be ≥ 1"),
    "json-quota-0.json": (f"{T}.quota", r"must be a positive size"),
    "json-quota-negative.json": (f"{T}.quota", r"must be a positive size"),
    "json-priority-129.json": (f"{T}.priority", r"must be ≤ 128"),
    "json-cores-0.json": (f"{T}.cores", r"must be ≥ 1"),
    "json-pkg-16-bytes.json": (f"{T}.pkg", PKG),
    "json-pkg-path-separator.json": (f"{T}.pkg", PKG),
    "json-pkg-backslash.json": (f"{T}.pkg", PKG),
    "json-pkg-nul.json": (f"{T}.pkg", PKG),
    "json-pkg-non-ascii.json": (f"{T}.pkg", PKG),
    "json-pkg-trailing-newline.json": (f"{T}.pkg", PKG),
    "json-pkg-empty.json": (f"{T}.pkg", PKG),
    "json-pkg-missing.json": (f"{T}.pkg", r"is required"),
    "json-string-for-int.json": (f"{T}.period", r"must be an integer, not str"),
    "json-boolean-for-int.json": (f"{T}.numberofjobs", r"must be an integer, not bool"),
    "json-float-for-int.json": (f"{T}.period", r"must be an integer, not float"),
    "json-null-for-int.json": (f"{T}.priority", r"must be an integer"),
    "json-object-for-int.json": (f"{T}.period", r"must be a value, a list, \{'range'"),
    "json-config-not-object.json": (f"{T}.config", r"must be an object"),
    "json-unknown-top-field.json": ("owner", r"unknown field"),
    "json-unknown-taskset-field.json": ("tasksets[0].scheduler", r"unknown field"),
    "json-unknown-task-field.json": (f"{T}.command", r"unknown field"),
    "json-unknown-config-field.json": (f"{T}.config.arg2", r"unknown field"),
    "json-range-step-0.json": (f"{T}.period.range", r"step must not be 0"),
    "json-range-empty.json": (f"{T}.period.range", r"is empty \(the stop value is excluded\)"),
    "json-range-backwards.json": (f"{T}.period.range", r"is empty"),
    "json-range-huge.json": (f"{T}.period.range", r"values must lie within 0..4294967295"),
    "json-random-lo-above-hi.json": (f"{T}.period.random", r"must be \[lo, hi\] with lo ≤ hi"),
    "json-random-out-of-bounds.json": (f"{T}.priority.random", r"must lie within 0..128"),
    "json-list-empty.json": (f"{T}.period", r"an empty list gives no variants"),
    "json-too-many-variants.json": ("tasksets", r"expand to 10+ variants; the limit is 1000000000000000"),
    "json-too-many-tasks.json": ("tasksets[0].tasks", r"has 65 tasks; the limit is 64"),
    "json-empty-tasksets.json": ("tasksets", r"must be a non-empty list"),
    "json-top-level-array.json": ("file", r"must be an object with a 'tasksets' list"),
    "json-utf16.json": ("file", r"^is not UTF-8 text \(byte 0\)"),
    "json-name-nul.json": ("name", r"control characters"),
    "json-name-lone-surrogate.json": ("name", r"control characters"),
    "json-seed-negative.json": ("seed", r"must be a non-negative integer"),
    "json-duplicate-key.json": (f"{T}.pkg", PKG),  # the last "pkg" wins, and is checked
    # YAML: no aliases (bombs), no python tags
    "yaml-alias.yaml": ("file", r"invalid YAML: aliases are not allowed"),
    "yaml-billion-laughs.yaml": ("file", r"invalid YAML: aliases are not allowed"),
    "yaml-merge-key.yaml": ("file", r"invalid YAML: aliases are not allowed"),
    "yaml-python-object.yaml": ("file", r"could not determine a constructor for the tag .*python/object/apply"),
    "yaml-python-name.yaml": ("file", r"could not determine a constructor for the tag .*python/name"),
    "yaml-truncated.yaml": ("file", r"invalid YAML: while parsing a flow mapping"),
    "yaml-date-for-int.yaml": (f"{T}.period", r"must be an integer, not date"),
    "yaml-multi-document.yaml": ("file", r"expected a single document"),
    "yaml-tab-indent.yaml": ("file", r"invalid YAML: .*'\\t' that cannot start any token"),
    "yaml-binary-tag.yaml": (f"{T}.pkg", PKG),
    "yaml-non-string-key.yaml": (f"{T}.1", r"unknown field"),
    "yaml-utf16.yaml": ("file", r"is not UTF-8 text \(byte 0\)"),
    # neither
    "empty.json": ("file", r"is empty"),
    "whitespace-only.yaml": ("file", r"is empty"),
    "binary-garbage.bin": ("file", r"is not UTF-8 text \(byte 5\)"),
    "nul-bytes.yaml": ("file", r"invalid YAML: unacceptable character #x0000"),
}
# Too large to commit: made at run time. name: (maker, path, pattern)
GENERATED = {
    "json-nesting-100k.json": (lambda: b"[" * 100_000 + b"]" * 100_000, "file", r"nested too deeply"),
    "json-object-nesting-100k.json": (lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "file", r"nested too deeply"),
    "yaml-nesting-100k.yaml": (lambda: b"{a: " * 100_000 + b"1" + b"}" * 100_000, "file", r"nested too deeply"),
    # PyYAML's scanner spends ~4 s on open flow sequences before it gives up
    # (bounded: the recursion limit stops it, whatever the file's size).
    "yaml-flow-sequence-nesting-100k.yaml": (lambda: b"a: " + b"[" * 100_000 + b"]" * 100_000, "file",
                                             r"nested too deeply"),
    "yaml-block-nesting-2k.yaml": (lambda: "".join(" " * i + "- \n" for i in range(2000)).encode(), "file",
                                   r"nested too deeply"),
    "xml-nesting-100k.xml": (lambda: b"<taskset>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</taskset>",
                             "taskset.a", r"unknown element"),
    "json-number-10k-digits.json": (lambda: b'{"seed": 1' + b"0" * 10_000 + b', "tasksets": []}', "file",
                                    r"invalid JSON: .*digits"),
    "yaml-number-10k-digits.yaml": (lambda: b"tasksets:\n- tasks:\n  - pkg: hey\n    period: 1" + b"0" * 10_000 + b"\n",
                                    "file", r"invalid YAML: .*digits"),
    "json-just-over-the-size-limit.json": (lambda: b'{"name": "' + b"x" * (5 * MB) + b'", "tasksets": []}', "file",
                                           r"the limit is 5242880 bytes"),
}
# What the web form says itself before the file reaches the parser.
FORM_SAYS = {"empty.json": ("file", r"The submitted file is empty")}
CHANNELS = ("cli", "api", "form")


def test_the_corpus_holds_exactly_the_listed_files():
    on_disk = {path.name for path in (CORPUS / "taskfiles").iterdir()}
    assert on_disk == set(TASKFILES)
    assert len(TASKFILES) + len(GENERATED) + len(API_CASES) + len(PROTOCOL_CASES) >= 50


def test_the_readme_lists_every_case():
    readme = (CORPUS / "README.md").read_text()
    cases = [*TASKFILES, *GENERATED, *(case.id for case in API_CASES), *(case.id for case in PROTOCOL_CASES),
             *UPLOAD_CASES]
    assert [case for case in cases if f"`{case}`" not in readme] == []


@pytest.fixture
def form(client, alice, stdio_target):
    client.force_login(alice)
    return {"target": "dry", "offset": "0", "priority": "0", "tries": "", "admission": "", "name": "", "action": "submit"}


def _taskfile(name: str, tmp_path: Path) -> tuple[Path, str, str]:
    if name in GENERATED:
        make, where, pattern = GENERATED[name]
        path = tmp_path / name
        path.write_bytes(make())
        return path, where, pattern
    return CORPUS / "taskfiles" / name, *TASKFILES[name]


SLOW = {"yaml-flow-sequence-nesting-100k.yaml"}


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])
                                  for name in [*TASKFILES, *GENERATED]])
def test_a_bad_taskset_file_is_refused_with_its_path(client, form, alice, tmp_path, name, channel):
    path, where, pattern = _taskfile(name, tmp_path)
    before = stored()
    with deadline(20):
        if channel == "cli":
            with pytest.raises(CommandError) as refused:
                call_command("submit", str(path), "--target", "dry")
            errors = dict(line.split(": ", 1) for line in str(refused.value).splitlines()[1:] if ": " in line)
        elif channel == "api":
            token = ApiToken.issue(alice, "corpus")[1]
            response = client.post("/api/jobs", {"file": SimpleUploadedFile(name, path.read_bytes()), "target": "dry"},
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 400, response.content[:500]
            errors = {item["path"]: item["message"] for item in response.json()["file_errors"]}
        else:
            where, pattern = FORM_SAYS.get(name, (where, pattern))
            response = client.post("/submit/", {**form, "file": SimpleUploadedFile(name, path.read_bytes())})
            assert response.status_code == 400
            errors = _form_errors(response.content.decode())
    assert where in errors, errors
    assert re.search(pattern, errors[where]), errors[where]
    assert stored() == before


def _form_errors(page: str) -> dict[str, str]:
    """The file's errors as the page lists them, and the file field's own."""
    errors = {html.unescape(path): html.unescape(message).strip()
              for path, message in re.findall(r"<li><code>(.*?)</code>(.*?)</li>", page, re.S)}
    own = re.search(r'data-field="file">(.*?)</ul>', page, re.S)
    if own:
        errors["file"] = " ".join(html.unescape(m) for m in re.findall(r"<li>(.*?)</li>", own.group(1)))
    return errors


# == 100 MB uploads ================================================================


class LazyBody:
    """A multipart request body of ``size`` file bytes made on demand, so that
    the test itself never holds 100 MB; ``read`` counts what the server took."""

    def __init__(self, fields: dict[str, str], filename: str, size: int, boundary: str = "corpus-boundary"):
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                       for key, value in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n")
        self.parts = [head.encode(), size, f"\r\n--{boundary}--\r\n".encode()]
        self.length = len(self.parts[0]) + size + len(self.parts[2])
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self.read_bytes = 0

    def read(self, count: int = -1) -> bytes:
        remaining = self.length - self.read_bytes
        count = remaining if count is None or count < 0 else min(count, remaining)
        out, position = bytearray(), self.read_bytes
        head, size, tail = self.parts
        while len(out) < count:
            at = position + len(out)
            want = count - len(out)
            if at < len(head):
                out += head[at:at + want]
            elif at < len(head) + size:
                out += b"{" * min(want, len(head) + size - at, MB)
            else:
                out += tail[at - len(head) - size:][:want]
        self.read_bytes += len(out)
        return bytes(out)

    def readline(self, limit: int = -1) -> bytes:
        line = b""
        while not line.endswith(b"\n") and len(line) != limit and self.read_bytes < self.length:
            line += self.read(1)
        return line

    def environ(self) -> dict:
        return {"wsgi.input": self, "CONTENT_LENGTH": str(self.length), "CONTENT_TYPE": self.content_type}


class LazyJson(LazyBody):
    """A JSON body of ``size`` bytes: {"file": "{{{…"}."""

    def __init__(self, size: int):
        self.parts = [b'{"target": "dry", "file": "', size, b'"}']
        self.length = len(self.parts[0]) + size + len(self.parts[2])
        self.content_type = "application/json"
        self.read_bytes = 0


@contextmanager
def peak_memory():
    """The peak of Python allocations inside the block, in bytes."""
    result = {}
    tracemalloc.start()
    try:
        yield result
    finally:
        result["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


UPLOAD_CASES = ["api-multipart-100mb", "api-json-100mb", "form-100mb", "binary-upload-100mb"]


@pytest.mark.parametrize("kind", ["api-multipart-100mb", "api-json-100mb"])
def test_a_100_mb_api_submission_is_refused_before_it_is_read(client, alice, stdio_target, kind):
    token = ApiToken.issue(alice, "corpus")[1]
    body = LazyBody({"target": "dry"}, "big.json", 100 * MB) if kind == "api-multipart-100mb" else LazyJson(100 * MB)
    with deadline(30), peak_memory() as memory:
        response = client.generic("POST", "/api/jobs", b"", headers={"Authorization": f"Bearer {token}"},
                                  **body.environ())
    assert response.status_code == 413, response.content[:500]
    errors = response.json()["errors"]
    assert re.search(r"request is 1048\d{5} bytes; .*at most", " ".join(errors.values())), errors
    assert body.read_bytes < MB, "the body was read although its length was known to be too large"
    assert memory["peak"] < 10 * MB
    assert stored() == (0, 0, 0, 0, 0)


def test_a_100_mb_upload_through_the_form_is_refused_without_holding_it(client, form):
    body = LazyBody({key: value for key, value in form.items()}, "big.json", 100 * MB)
    with deadline(60), peak_memory() as memory:
        response = client.generic("POST", "/submit/", b"", **body.environ())
    # Refused by its declared length before the CSRF check or the form read any of it (issue 16).
    assert response.status_code == 413
    assert re.search(r"the request is 104,85\d,\d{3} bytes; .* at most 5,242,880 bytes. Nothing was read.",
                     _form_errors(response.content.decode())["file"])
    assert body.read_bytes == 0
    assert memory["peak"] < 5 * MB
    assert stored() == (0, 0, 0, 0, 0)


def test_a_100_mb_binary_upload_is_refused_and_nothing_is_kept(client, staff, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    client.force_login(staff)
    body = LazyBody({"name": "big"}, "big", 100 * MB)
    with deadline(60):
        response = client.generic("POST", "/files/binaries", b"", **body.environ())
    assert response.status_code == 400
    assert "the limit is 67,108,864 bytes" in html.unescape(response.content.decode())
    assert Binary.objects.count() == 0
    assert not settings.MEDIA_ROOT.exists() or not any(settings.MEDIA_ROOT.rglob("*"))
    assert not Blob.objects.exists()


# == API requests ================================================================

NOTHING = object()


@dataclass
class ApiCase:
    id: str
    method: str
    url: str
    status: int
    field: str  # the key of ``errors`` that names the cause
    message: str = ""  # a pattern its message must match
    auth: str = "alice"  # alice, sam (staff), none, wrong, revoked, inactive, basic, session
    json: object = NOTHING
    raw: bytes | None = None
    content_type: str = "application/json"
    multipart: dict | None = None


SPEC = {"name": "corpus", "tasksets": [{"tasks": [{"pkg": "hey", "period": {"range": [1, 5]}}]}]}  # 4 variants


def _sub(**fields) -> dict:
    return {"spec": SPEC, "target": "dry", **fields}


API_CASES = [
    # who is asking
    ApiCase("no-token", "POST", "/api/jobs", 401, "authorization", r"log in, or send", auth="none", json=_sub()),
    ApiCase("wrong-token", "POST", "/api/jobs", 401, "authorization", r"unknown or revoked token", auth="wrong",
            json=_sub()),
    ApiCase("revoked-token", "POST", "/api/jobs", 401, "authorization", r"unknown or revoked token", auth="revoked",
            json=_sub()),
    ApiCase("inactive-user-token", "POST", "/api/jobs", 401, "authorization", r"unknown or revoked", auth="inactive",
            json=_sub()),
    ApiCase("basic-auth-header", "GET", "/api/jobs", 401, "authorization", r"expected 'Authorization: Bearer",
            auth="basic"),
    ApiCase("session-without-csrf", "POST", "/api/jobs", 403, "csrf", r"CSRF token", auth="session", json=_sub()),
    ApiCase("non-staff-sets-max-machines", "POST", "/api/distributor", 403, "authorization", r"only staff",
            json={"max_machines": 3}),
    ApiCase("non-staff-kills-all", "POST", "/api/distributor/kill", 403, "authorization", r"only staff"),
    ApiCase("non-owner-cancels", "POST", "/api/jobs/{job}/cancel", 403, "authorization", r"only its owner or staff"),
    # wrong types and values of the options
    ApiCase("offset-string", "POST", "/api/jobs", 400, "offset", r"must be an integer", json=_sub(offset="x")),
    ApiCase("offset-past-the-end", "POST", "/api/jobs", 400, "offset", r"from 0 to 3 \(the file has 4 variants\)",
            json=_sub(offset=4)),
    ApiCase("offset-10-pow-30", "POST", "/api/jobs", 400, "offset", r"from 0 to 3", json=_sub(offset=10**30)),
    ApiCase("tries-negative", "POST", "/api/jobs", 400, "tries", r"from 1 to 100", json=_sub(tries=-1)),
    ApiCase("tries-boolean", "POST", "/api/jobs", 400, "tries", r"must be an integer", json=_sub(tries=True)),
    ApiCase("priority-1e9", "POST", "/api/jobs", 400, "priority", r"must be an integer", json=_sub(priority=1e9)),
    ApiCase("priority-10-pow-9", "POST", "/api/jobs", 400, "priority", r"from -1000 to 1000",
            json=_sub(priority=10**9)),
    ApiCase("target-number", "POST", "/api/jobs", 400, "target", r"must be a string", json=_sub(target=42)),
    ApiCase("target-unknown", "POST", "/api/jobs", 400, "target", r"no target named 'nowhere'",
            json=_sub(target="nowhere")),
    ApiCase("target-with-nul", "POST", "/api/jobs", 400, "target", r"without control characters", json=_sub(target="dry\u0000")),
    ApiCase("name-with-nul", "POST", "/api/jobs", 400, "name", r"without control characters", json=_sub(name="job\u0000")),
    ApiCase("name-lone-surrogate", "POST", "/api/jobs", 400, "name", r"surrogate", json=_sub(name="job \ud800")),
    ApiCase("filename-with-nul", "POST", "/api/jobs", 400, "filename", r"without control characters",
            json={"file": json.dumps(SPEC), "filename": "a\u0000.json", "target": "dry"}),
    ApiCase("file-lone-surrogate", "POST", "/api/jobs", 400, "file", r"surrogate",
            json={"file": '{"name": "\ud800"}', "target": "dry"}),
    ApiCase("admission-list", "POST", "/api/jobs", 400, "admission", r"must be an object", json=_sub(admission=[1])),
    ApiCase("admission-nan", "POST", "/api/jobs", 400, "admission", r"finite",
            json=_sub(admission={"max": float("nan")})),
    ApiCase("admission-nul", "POST", "/api/jobs", 400, "admission", r"without control characters",
            json=_sub(admission={"goal": "a\u0000"})),
    ApiCase("monitors-string", "POST", "/api/jobs", 400, "monitors", r"must be a list", json=_sub(monitors="logging")),
    ApiCase("monitors-unknown", "POST", "/api/jobs", 400, "monitors", r"unknown monitor\(s\) spy",
            json=_sub(monitors=["spy"])),
    # the body itself
    ApiCase("no-spec-nor-file", "POST", "/api/jobs", 400, "spec", r"send either 'spec'", json={"target": "dry"}),
    ApiCase("spec-and-file", "POST", "/api/jobs", 400, "spec", r"send either", json=_sub(file="{}")),
    ApiCase("spec-a-list", "POST", "/api/jobs", 400, "spec", r"must be a JSON object", json=_sub(spec=[SPEC])),
    ApiCase("file-a-number", "POST", "/api/jobs", 400, "file", r"must be a string", json={"file": 42}),
    ApiCase("unknown-field", "POST", "/api/jobs", 400, "owner", r"unknown field", json=_sub(owner="root")),
    ApiCase("bad-spec-stores-nothing", "POST", "/api/jobs", 400, "file", r"numberofjobs: must be ≥ 1",
            json=_sub(spec={"tasksets": [{"tasks": [{"pkg": "hey", "numberofjobs": 0}]}]})),
    ApiCase("check-of-a-bad-file", "POST", "/api/check", 400, "file", r"pkg: must be 1-15",
            json={"file": '{"tasksets": [{"tasks": [{"pkg": "../x"}]}]}'}),
    ApiCase("invalid-json", "POST", "/api/jobs", 400, "body", r"invalid JSON", raw=b'{"spec": {'),
    ApiCase("json-array-body", "POST", "/api/jobs", 400, "body", r"must be a JSON object", raw=b"[1, 2]"),
    ApiCase("json-not-utf8", "POST", "/api/jobs", 400, "body", r"invalid JSON", raw=b'{"name": "\xff\xfe"}'),
    ApiCase("json-nested-100k", "POST", "/api/jobs", 400, "body", r"nested too deeply", raw=b"[" * 100_000),
    ApiCase("json-huge-integer", "POST", "/api/jobs", 400, "body", r"invalid JSON",
            raw=b'{"offset": 1' + b"0" * 5000 + b"}"),
    ApiCase("wrong-content-type", "POST", "/api/jobs", 415, "content_type", r"application/json or multipart",
            raw=json.dumps(_sub()).encode(), content_type="text/plain"),
    ApiCase("multipart-without-file", "POST", "/api/jobs", 400, "file", r"multipart field 'file'",
            multipart={"target": "dry"}),
    ApiCase("multipart-tries-word", "POST", "/api/jobs", 400, "tries", r"must be an integer",
            multipart={"target": "dry", "tries": "many", "file": ("t.json", json.dumps(SPEC).encode())}),
    ApiCase("multipart-admission-not-json", "POST", "/api/jobs", 400, "admission", r"must be an object",
            multipart={"target": "dry", "admission": "{goal", "file": ("t.json", json.dumps(SPEC).encode())}),
    # what is asked for
    ApiCase("unknown-job", "GET", "/api/jobs/987654", 404, "id", r"no job 987654"),
    ApiCase("job-id-past-bigint", "GET", "/api/jobs/99999999999999999999999", 404, "id", r"no job"),
    ApiCase("unknown-taskset", "GET", "/api/tasksets/987654", 404, "id", r"no task set 987654"),
    ApiCase("resubmit-unknown-job", "POST", "/api/jobs/987654/resubmit", 404, "id", r"no job 987654"),
    ApiCase("unknown-control", "POST", "/api/distributor/explode", 404, "action", r"unknown action", auth="sam"),
    ApiCase("max-machines-word", "POST", "/api/distributor", 400, "max_machines", r".", auth="sam",
            json={"max_machines": "lots"}),
    ApiCase("max-machines-missing", "POST", "/api/distributor", 400, "max_machines", r"required", auth="sam",
            json={}),
    ApiCase("wrong-method", "DELETE", "/api/jobs", 405, "method", r"DELETE is not allowed"),
    ApiCase("unknown-state-filter", "GET", "/api/jobs?state=exploded", 400, "state", r"must be one of"),
    ApiCase("page-0", "GET", "/api/jobs?page=0", 400, "page", r"from 1 to"),
    ApiCase("page-superscript-two", "GET", "/api/jobs?page=%C2%B2", 400, "page", r"from 1 to"),
    ApiCase("page-5000-digits", "GET", "/api/jobs?page=" + "9" * 5000, 400, "page", r"from 1 to"),
    ApiCase("page-size-over-max", "GET", "/api/jobs?page_size=501", 400, "page_size", r"from 1 to 500"),
    ApiCase("page-past-the-end", "GET", "/api/jobs?page=7", 404, "page", r"there are 1 page"),
]


@pytest.fixture
def api_world(client, alice, staff, stdio_target):
    """Alice (tokens of several kinds), Sam (staff) and one job of Sam's."""
    tokens = {"alice": ApiToken.issue(alice, "script")[1], "sam": ApiToken.issue(staff, "ops")[1],
              "wrong": "dst_" + "x" * 43}
    revoked, tokens["revoked"] = ApiToken.issue(alice, "old")
    client.force_login(alice)
    assert client.post(f"/profile/tokens/{revoked.pk}/revoke").status_code == 302
    client.logout()
    from django.contrib.auth import get_user_model

    mallory = get_user_model().objects.create_user("mallory", password="mallory-password-1", is_active=False)
    tokens["inactive"] = ApiToken.issue(mallory, "gone")[1]
    job = submit_job(json.dumps(SPEC), target=stdio_target, owner=staff)
    return tokens, job


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.id)
def test_a_bad_api_request_gets_a_4xx_naming_the_cause(client, api_world, alice, case):
    tokens, job = api_world
    headers = {}
    if case.auth == "session":
        client = type(client)(enforce_csrf_checks=True)
        client.force_login(alice)
    elif case.auth == "basic":
        headers["Authorization"] = "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQtMQ=="
    elif case.auth != "none":
        headers["Authorization"] = f"Bearer {tokens[case.auth]}"
    url = case.url.format(job=job.pk)
    before = stored()
    if case.multipart is not None:
        data = {key: SimpleUploadedFile(*value) if isinstance(value, tuple) else value
                for key, value in case.multipart.items()}
        response = client.post(url, data, headers=headers)
    elif case.raw is not None or case.json is not NOTHING:
        body = case.raw if case.raw is not None else json.dumps(case.json).encode()
        response = client.generic(case.method, url, body, content_type=case.content_type, headers=headers)
    else:
        response = client.generic(case.method, url, headers=headers)
    assert response.status_code == case.status, response.content[:500]
    errors = response.json()["errors"]
    assert case.field in errors, errors
    assert re.search(case.message, errors[case.field]), errors[case.field]
    assert stored() == before
    assert Job.objects.get(pk=job.pk).state == Job.State.QUEUED


# == protocol messages from a target =================================================

AVAILABLE, SEND_DESCS, OPTIMIZE, SEND_BINARIES, GO_SEND, START = 0xAAAAA, 0xDE5, 0x6F7074, 0xDE5F11E, 0x90, 0x514DE5
_word = struct.Struct("<I")
GOOD_EVENTS = [(0, "START", 0), (0, "EXIT", 1), (0, "JOBS_DONE", 1), (1, "START", 1), (1, "EXIT", 2),
               (1, "JOBS_DONE", 2)]
GOOD = frame(events_xml(GOOD_EVENTS))


def _body(name: str) -> bytes:
    """A message from tests/corpus/events/, framed the proper way (size word, NUL counted)."""
    return frame((CORPUS / "events" / name).read_bytes().rstrip(b"\n") + b"\0")


@dataclass
class ProtocolCase:
    id: str
    reply: bytes  # what the target sends after START
    cause: str  # pattern of the TargetFailure's message
    then: str = "close"  # close, silent (connection kept open, nothing more), or stay (still answering)
    target: dict = field(default_factory=dict)  # FakeTarget options


PROTOCOL_CASES = [
    # framing
    ProtocolCase("size-word-0xFFFFFFFF", _word.pack(0xFFFFFFFF) + b"<profile>", r"size word 4294967295 exceeds "
                 r"max_message_bytes \(4194304\): garbage on the wire", then="stay"),
    ProtocolCase("size-word-just-over-the-limit", _word.pack(4 * MB + 1), r"size word 4194305 exceeds", then="stay"),
    ProtocolCase("size-word-0", _word.pack(0), r"empty event message \(size word 0\)", then="stay"),
    ProtocolCase("truncated-then-close", _word.pack(200) + b"<profile><events><event task-id=",
                 r"target closed the connection while waiting for events \(36 bytes of a message received\)"),
    ProtocolCase("truncated-size-word-then-close", b"\x10\x00", r"closed the connection .*\(2 bytes of a message"),
    ProtocolCase("truncated-then-silence", _word.pack(200) + b"<profile>", r"target silent for 1 s", then="silent"),
    ProtocolCase("close-right-after-start", b"", r"target closed the connection while waiting for events$"),
    ProtocolCase("no-trailing-nul", frame(events_xml(GOOD_EVENTS)[:-1]), r"without its trailing NUL", then="stay"),
    ProtocolCase("nul-inside", frame(b"<profile>\0<events/></profile>\0"), r"NUL byte inside an event message",
                 then="stay"),
    ProtocolCase("garbage-after-a-good-message", frame(events_xml(GOOD_EVENTS[:2])) + b"\x13#!garbage!" * 3,
                 r"size word 1730224915 exceeds max_message_bytes", then="stay"),
    # bodies (tests/corpus/events/)
    *[ProtocolCase(name.rsplit(".", 1)[0], _body(name), cause, then="stay") for name, cause in {
        "non-ascii.xml": r"non-ASCII byte 0xC3 at offset \d+ of an event message",
        "invalid-utf8.xml": r"non-ASCII byte 0xFF",
        "malformed.xml": r"malformed XML in an event message \(mismatched tag",
        "not-xml.xml": r"malformed XML in an event message \(syntax error",
        "dtd-entity-bomb.xml": r"refused XML in an event message \(DTDForbidden\)",
        "external-entity.xml": r"refused XML in an event message \(DTDForbidden\)",
        "unknown-root.xml": r"unknown structure: root element <html>, expected <profile>",
        "unknown-child.xml": r"unknown structure: <statistics> inside <profile>, expected <events>",
        "unknown-task-id.xml": r"event START for unknown task id 7",
        "task-id-past-32-bits.xml": r"task-id 4294967296 out of range",
        "unknown-event-type.xml": r"unknown event type 'REBOOTED' for task 0",
        "negative-time-stamp.xml": r"negative task-id or time-stamp",
        "non-numeric-time-stamp.xml": r"non-integer task-id or time-stamp",
        "time-stamp-2-pow-64.xml": r"time-stamp 18446744073709551616 out of range",
        "missing-type.xml": r"an <event> without the attribute 'type'",
        "missing-task-id.xml": r"an <event> without the attribute 'task-id'",
        "exit-without-start.xml": r"task 0: EXIT without a START",
        "jobs-done-wrong-count.xml": r"task 0: JOBS_DONE after 0 jobs, expected 1",
        "jobs-done-while-running.xml": r"task 0: JOBS_DONE after 0 jobs, expected 1",
        "event-after-jobs-done.xml": r"event START for task 0 after its JOBS_DONE",
        "start-twice.xml": r"task 0: START while its previous job is still running",
        "ends-before-it-starts.xml": r"task 0: job 0 ends before it starts",
        "more-jobs-than-asked.xml": r"task 0: more than 1 jobs",
        "exit-error.xml": r"target reported EXIT_ERROR for task 1 at 3 ms",
        "empty-profile.xml": r"target silent for 1 s",
    }.items()],
    # the conversation before START
    ProtocolCase("wrong-answer-to-available", b"", r"AVAILABLE answered 0xBAD, expected 0xAAAAA",
                 target={"available": 0xBAD}),
    ProtocolCase("wrong-go-send", b"", r"expected GO_SEND 0x90 before binary 'hey', got 0x91",
                 target={"go_send": 0x91}),
]
TASKS = [{"id": task_id, "pkg": "hey", "arg1": 0, "priority": task_id, "deadline": 0, "period": 0, "offset": 0,
          "numberofjobs": 1, "criticaltime": 0, "quota": "5M", "caps": 50, "cores": 1, "coreoffset": 0}
         for task_id in (0, 1)]


def test_the_event_corpus_holds_exactly_the_listed_files():
    used = {case.id + ".xml" for case in PROTOCOL_CASES}
    assert {path.name for path in (CORPUS / "events").iterdir()} <= used


class FakeTarget:
    """A Genode task loader of the test's own: it answers AVAILABLE and
    GO_SEND, takes the task-set, and after each START sends its next scripted
    reply (raw bytes); then it closes, goes silent or stays. Once the script
    is used up it replies with a good run."""

    def __init__(self, *replies: tuple[bytes, str], available: int = AVAILABLE, go_send: int = GO_SEND):
        self.replies = list(replies)
        self.available, self.go_send = available, go_send
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.closing = threading.Event()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "FakeTarget":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                self.conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conn.settimeout(None)
            try:
                self._talk(self.conn)
            except (OSError, EOFError):
                pass
            finally:
                self.conn.close()

    def _read(self, conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _word(self, conn: socket.socket) -> int:
        return _word.unpack(self._read(conn, 4))[0]

    def _talk(self, conn: socket.socket) -> None:
        while True:
            word = self._word(conn)
            if word == AVAILABLE:
                conn.sendall(_word.pack(self.available))
            elif word in (SEND_DESCS, OPTIMIZE):
                self._read(conn, self._word(conn))
            elif word == SEND_BINARIES:
                for _ in range(self._word(conn)):
                    conn.sendall(_word.pack(self.go_send))
                    if self.go_send != GO_SEND:
                        return self._silent(conn)
                    self._read(conn, 16)
                    self._read(conn, self._word(conn))
            elif word == START:
                reply, then = self.replies.pop(0) if self.replies else (GOOD, "stay")
                conn.sendall(reply)
                if then == "close":
                    return
                if then == "silent":
                    return self._silent(conn)
            # CLEAR and STOP need no answer

    def _silent(self, conn: socket.socket) -> None:
        while conn.recv(4096):
            pass


@pytest.fixture
def hey_binary(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path  # this host's cache
    row = Binary.store("hey", ContentFile(b"\x7fELF hey"))[0]
    return row


def _session(address: str):
    info = SessionInfo(machine_id=1, slot=0, address=address, settings={"connect_timeout": 1.0, "startup_timeout": 2.0},
                       log=__import__("logging").getLogger("tests.corpus"), target_timeout=1.0, files=UploadedFiles())
    return get_session_class("genode")(info)


@pytest.mark.slow
@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=lambda case: case.id)
def test_a_bad_target_message_is_a_target_failure_naming_the_cause(hey_binary, case):
    with FakeTarget((case.reply, case.then), **case.target) as target, deadline(10):
        session = _session(target.address)
        with pytest.raises(TargetFailure, match=case.cause):
            session.start_host()
            session.start(TASKS)
            tracker = EventTracker(TASKS)
            while not tracker.finished:  # what a machine does with the events
                tracker.feed(session.run(0.25))
        session.close()


# -- through the engine: one machine, in this process -----------------------------

ENGINE_CASES = ["size-word-0xFFFFFFFF", "truncated-then-close", "non-ascii", "unknown-task-id",
                "time-stamp-2-pow-64", "task-id-past-32-bits", "jobs-done-wrong-count"]
JOB_FILE = json.dumps({"name": "corpus", "tasksets": [{"tasks": [
    {"pkg": "hey", "period": 0, "numberofjobs": 1}, {"pkg": "hey", "period": 0, "numberofjobs": 1}]}]})


@pytest.fixture
def engine_world(transactional_db, settings, tmp_path):
    """One genode target pool; launches are run here in threads, not queued."""
    settings.DATA_DIR = tmp_path  # this host's cache
    Binary.store("hey", ContentFile(b"\x7fELF hey"))[0]
    DistributorConfig.get()
    DistributorConfig.objects.update(target_timeout_s=1, idle_timeout_s=0)
    beat()
    with mock.patch("distributor.reconciler.async_task"):
        yield


def _run_machines(timeout: float = 20) -> None:
    threads, until = [], time.monotonic() + timeout
    while time.monotonic() < until:
        beat()
        for machine in Machine.objects.filter(state=Machine.State.LAUNCHING):
            threads.append(threading.Thread(target=run_machine, args=(machine.pk,)))
            threads[-1].start()
        if not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists():
            break
        time.sleep(0.05)
    join_machine_threads(threads)


def _engine_run(replies: list[tuple[bytes, str]], tries: int) -> tuple[TaskSet, Machine]:
    with FakeTarget(*replies) as fake, deadline(40):
        target = Target.objects.create(name="fake", kind="genode", addresses=[fake.address],
                                       settings={"connect_timeout": 1.0, "startup_timeout": 3.0})
        job = submit_job(JOB_FILE, target=target, tries=tries)
        _run_machines()
    return TaskSet.objects.get(job=job), Machine.objects.get(target=target)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINE_CASES)
def test_a_bad_target_message_makes_the_machine_retry_not_crash(engine_world, name):
    case = next(case for case in PROTOCOL_CASES if case.id == name)
    taskset, machine = _engine_run([(case.reply, case.then)], tries=2)

    first, second = Attempt.objects.filter(taskset=taskset).order_by("number")
    assert first.result == Attempt.Result.FAILED and re.search(case.cause, first.error), first.error
    assert (taskset.state, taskset.attempts, second.result) == (TaskSet.State.FINISHED, 2, Attempt.Result.FINISHED)
    # The machine stopped cleanly and still shows the operator the failure it recovered from.
    assert machine.state == Machine.State.STOPPED and re.search(case.cause, machine.last_error), machine.last_error
    assert machine.target_boots == 2  # restarted after the failure
    assert TaskJob.objects.filter(taskset=taskset).count() == 2  # the good attempt's, nothing of the bad one


@pytest.mark.slow
def test_a_bad_target_message_on_the_last_try_makes_the_taskset_bad_with_its_cause(engine_world):
    case = next(case for case in PROTOCOL_CASES if case.id == "unknown-event-type")
    taskset, machine = _engine_run([(case.reply, case.then)], tries=1)

    assert taskset.state == TaskSet.State.BAD and re.search(case.cause, taskset.last_error), taskset.last_error
    assert machine.state == Machine.State.STOPPED
    assert TaskJob.objects.count() == 0
