"""The hostile-input corpus of issue 16 (point 10): what an attacker tried
against a fresh `make run` — with a user who is not staff, with staff and with
API tokens — through every way in: the web form, the API's JSON and
multipart bodies, and the command line. Every case must be refused with a 4xx
(or a CommandError, the command's non-zero exit) that names the field or the
cause, and must leave the database as it found it. Every case of the issue
is here; tests/test_corpus.py (issue 8) holds the earlier corpus."""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from distributor.models import Binary, BootImage, Job, Target, Task, TaskSet
from webapp.models import ApiToken

pytestmark = pytest.mark.corpus  # hundreds of cases: make test runs them, make test-fast does not

MB = 2**20
T = "tasksets[0].tasks[0]"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000
DEEP_YAML = "a: " + "[" * 100_000 + "]" * 100_000


def spec(**task) -> dict:
    return {"name": "hostile", "tasksets": [{"tasks": [{"pkg": "hey", "period": 10, "numberofjobs": 2, **task}]}]}


def text_of(**task) -> str:
    return json.dumps(spec(**task))


GOOD = text_of()


def stored() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Job, TaskSet, Task, Target, Binary, BootImage))


# == the cases ======================================================================

@dataclass
class Case:
    id: str
    channel: str  # form, json, multipart, cli
    status: int  # the HTTP status; ignored for the command line (an error is its non-zero exit)
    field: str  # the field or path the error must be under
    pattern: str  # in its message
    text: str | None = None  # the task-set file (its text)
    filename: str = "hostile.json"
    options: dict = field(default_factory=dict)  # job options, as each channel sends them
    body: bytes | None = None  # a raw body (json, multipart)
    content_type: str = ""


# Task-set files: each through all four ways in.
FILES = [
    ("quota-10e400", text_of(quota=10**400), f"{T}.quota", "at most 1 TiB"),
    ("quota-999999999999G", text_of(quota="999999999999G"), f"{T}.quota", "at most 1 TiB"),
    ("quota-1025G", text_of(quota="1025G"), f"{T}.quota", "at most 1 TiB"),
    ("quota-13-digits-of-bytes", text_of(quota="9999999999999"), f"{T}.quota", "at most 1 TiB"),
    ("caps-2-pow-31", text_of(caps=2**31), f"{T}.caps", "≤ 2147483647"),
    ("caps-list-2-pow-32", text_of(caps=[1, 2**32]), f"{T}.caps[1]", "≤ 2147483647"),
    ("range-step-10e400", text_of(period={"range": [5, 10**400, 10**400]}), f"{T}.period.range", "stop and step"),
    ("range-stop-2-pow-70", text_of(offset={"range": [0, 2**70, 2**70]}), f"{T}.offset.range", "stop and step"),
    ("priority-10e400", text_of(priority=10**400), f"{T}.priority", "≤ 128"),
    ("numberofjobs-2-pow-64", text_of(numberofjobs=2**64), f"{T}.numberofjobs", "≤ 1000000"),
    ("arg1-negative", text_of(config={"arg1": -1}), f"{T}.config.arg1", "≥ 0"),
    ("cores-257", text_of(cores=257), f"{T}.cores", "≤ 256"),
    ("random-beyond-priority", text_of(priority={"random": [0, 2**40]}), f"{T}.priority.random", "within 0..128"),
    ("deadline-1e400", GOOD.replace('"period": 10', '"period": 10, "deadline": 1e400'), f"{T}.deadline",
     "must be an integer, not float"),
    ("seed-2-pow-64", json.dumps({**spec(), "seed": 2**64}), "seed", "non-negative integer"),
    ("pkg-path", text_of(pkg="../../bin/sh"), f"{T}.pkg", "no path"),
    ("json-nested-100k", DEEP_JSON, "file", "nested too deeply"),
    ("json-object-nested-100k", DEEP_OBJECT, "file", "nested too deeply"),
    ("json-nested-33", "[" * 33 + "]" * 33, "file", "nested too deeply (33 levels; the limit is 32)"),
]
# The YAML file goes in by file name (the JSON body's spec is JSON).
YAML_FILES = [("yaml-nested-100k", DEEP_YAML, "file", "nested too deeply")]

CASES: list[Case] = []
for name, text, where, message in FILES:
    CASES += [Case(f"{name}-{channel}", channel, 400, where, message, text=text)
              for channel in ("form", "json", "multipart", "cli")]
for name, text, where, message in YAML_FILES:
    CASES += [Case(f"{name}-{channel}", channel, 400, where, message, text=text, filename="hostile.yaml")
              for channel in ("form", "json", "multipart", "cli")]

# Job options: each through the ways that take it.
OPTIONS = [
    ("admission-nested-100k", {"admission": DEEP_JSON}, "admission", "nested too deeply", ("form", "multipart", "cli")),
    ("admission-2-pow-63", {"admission": {"goal": 2**63}}, "admission", "within ±2^63", ("form", "json", "multipart", "cli")),
    ("admission-list", {"admission": [1, 2]}, "admission", "must be", ("form", "json", "multipart", "cli")),
    ("offset-10e400", {"offset": 10**400}, "offset", "must be an integer", ("form", "json", "multipart", "cli")),
    ("tries-10e6", {"tries": 10**6}, "tries", "from 1 to 100", ("form", "json", "multipart", "cli")),
    ("priority-minus-10e30", {"priority": -(10**30)}, "priority", "must be an integer", ("form", "json", "multipart", "cli")),
    ("name-201", {"name": "n" * 201}, "name", "at most 200 characters", ("form", "json", "multipart", "cli")),
    ("name-nul", {"name": "a\x00b"}, "name", "", ("form", "json", "multipart")),
    ("target-nul", {"target": "dry\x00"}, "target", "", ("form", "json", "multipart", "cli")),
    ("target-unknown", {"target": "nowhere"}, "target", "", ("form", "json", "multipart", "cli")),
    ("filename-10000", {"filename": "f" * 10_000 + ".json"}, "filename", "at most 255 characters", ("form", "json")),
    ("filename-nul", {"filename": "evil\x00.json"}, "filename", "", ("form", "json")),
    ("filename-escape", {"filename": "evil\x1b[2J.json"}, "filename", "control characters", ("form", "json")),
]
for name, options, where, message, channels in OPTIONS:
    CASES += [Case(f"{name}-{channel}", channel, 400, where, message, text=GOOD, options=options)
              for channel in channels]

# Bodies the API refuses before it reads them, or cannot read.
CASES += [
    Case("json-body-nested-100k", "json", 400, "body", "nested too deeply",
         body=('{"file": %s, "admission": %s}' % (json.dumps(GOOD), DEEP_JSON)).encode()),
    Case("json-body-50mb", "json", 413, "body", "a submission may be at most", body=b" " * (50 * MB)),
    Case("multipart-50mb", "multipart", 413, "file", "a submission may be at most", body=b" " * (50 * MB),
         content_type="multipart/form-data; boundary=x"),
    Case("multipart-no-boundary", "multipart", 400, "body", "malformed multipart", body=b"x",
         content_type="multipart/form-data"),
    Case("multipart-bad-boundary", "multipart", 400, "body", "malformed multipart", body=b"x",
         content_type="multipart/form-data; boundary=" + "b" * 300),
    Case("json-not-an-object", "json", 400, "body", "must be a JSON object", body=b"[1, 2]"),
    Case("json-integer-5000-digits", "json", 400, "body", "invalid JSON", body=b'{"offset": ' + b"9" * 5000 + b"}"),
    Case("json-unknown-field", "json", 400, "owner", "unknown field", body=b'{"file": "x", "owner": "sam"}'),
    Case("wrong-content-type", "json", 415, "content_type", "application/json", body=b"x", content_type="text/xml"),
]


# == running a case ====================================================================


@pytest.fixture
def ways_in(client, alice, stdio_target, tmp_path):
    stdio_target.is_default = True  # as after `make run`: a refused check then creates no default pool
    stdio_target.save()
    token = ApiToken.issue(alice, "hostile")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    client.force_login(alice)

    def form(case: Case):
        fields = {"target": "dry", "offset": "0", "priority": "0", "tries": "", "admission": "", "name": "",
                  "action": "submit", "text": case.text}
        if case.filename != "hostile.json":
            fields.pop("text")
            fields["file"] = SimpleUploadedFile(case.filename, case.text.encode())
        for key, value in case.options.items():
            fields[key] = value if isinstance(value, str) else json.dumps(value)
        if case.options.get("filename"):
            fields["filename"] = case.options["filename"]
        response = client.post("/submit/", fields)
        return response.status_code, form_errors(response.content.decode())

    def api_json(case: Case):
        if case.body is not None:
            response = client.generic("POST", "/api/jobs", case.body, content_type=case.content_type or "application/json",
                                      **auth)
        else:
            body = {"file": case.text, "filename": case.filename, "target": "dry", **case.options}
            response = client.post("/api/jobs", json.dumps(body), content_type="application/json", **auth)
        return response.status_code, api_errors(response)

    def multipart(case: Case):
        if case.body is not None:
            response = client.generic("POST", "/api/jobs", case.body, content_type=case.content_type, **auth)
        else:
            fields = {"file": SimpleUploadedFile(case.filename, case.text.encode()), "target": "dry"}
            for key, value in case.options.items():
                fields[key] = value if isinstance(value, str) else json.dumps(value)
            response = client.post("/api/jobs", fields, **auth)
        return response.status_code, api_errors(response)

    def cli(case: Case):
        path = tmp_path / case.filename
        path.write_text(case.text)
        arguments = []
        for key, value in case.options.items():
            arguments += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        if "--target" not in arguments:
            arguments += ["--target", "dry"]
        with pytest.raises(CommandError) as refused:
            call_command("submit", str(path), *arguments, stdout=io.StringIO())
        return None, {"cli": str(refused.value)}

    return {"form": form, "json": api_json, "multipart": multipart, "cli": cli}


def form_errors(page: str) -> dict[str, str]:
    """The page's errors by field, and the file's by path."""
    errors = {html_text(path): html_text(message) for path, message in
              re.findall(r"<li><code>(.*?)</code>(.*?)</li>", page, re.S)}
    for name, block in re.findall(r'data-field="(\w+)">(.*?)</ul>', page, re.S):
        errors[name] = " ".join(html_text(m) for m in re.findall(r"<li>(.*?)</li>", block, re.S))
    return errors


def html_text(fragment: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def api_errors(response) -> dict[str, str]:
    assert response["Content-Type"] == "application/json", response.content[:300]
    body = response.json()
    return {**body["errors"], **{e["path"]: e["message"] for e in body.get("file_errors", [])}}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_hostile_input_is_refused_naming_its_field_and_nothing_is_stored(ways_in, case):
    before = stored()
    status, errors = ways_in[case.channel](case)
    if case.channel == "cli":
        message = errors["cli"]
        name = case.field if case.field.startswith(("tasksets", "file", "seed")) else f"--{case.field}"
        assert name in message and case.pattern in message, message
    else:
        assert status == case.status, (status, errors)
        assert case.field in errors, errors
        assert case.pattern in errors[case.field], errors[case.field]
    assert stored() == before


def test_the_corpus_is_large_and_covers_every_way_in():
    channels = {case.channel for case in CASES}
    assert len(CASES) + len(OTHER_CASES) >= 80 and channels == {"form", "json", "multipart", "cli"}


# == the issue's other cases: the web's own pages, the static files, logins, the CLI =====


def deep_settings(client, staff):
    client.force_login(staff)
    response = client.post("/targets/new", {"name": "deep", "kind": "stdio", "settings": '{"print": %s}' % DEEP_JSON})
    return response.status_code, form_errors(response.content.decode()).get("settings", "")


def image_named(name: str):
    def upload(client, staff):
        client.force_login(staff)
        response = client.post("/files/images", {"name": name, "file": SimpleUploadedFile("image.elf", b"\x7fELF")})
        return response.status_code, " ".join(form_errors(response.content.decode()).values()) or \
            html_text(response.content.decode())
    return upload


def form_body_50mb(client, staff):
    client.force_login(staff)
    response = client.generic("POST", "/submit/", b"", CONTENT_LENGTH=str(50 * MB),
                              CONTENT_TYPE="multipart/form-data; boundary=x")
    return response.status_code, form_errors(response.content.decode()).get("file", "")


def form_text_6mb(client, staff):
    client.force_login(staff)
    response = client.post("/submit/", {"text": GOOD + " " * (6 * MB), "offset": "0", "priority": "0",
                                        "action": "check"})
    return response.status_code, form_errors(response.content.decode()).get("text", "")


def static_escape(path: str):
    def get(client, staff):
        from distributor.management.commands.serve import StaticFiles

        status = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": unquote(path, "latin-1"), "SERVER_NAME": "localhost",
                   "SERVER_PORT": "8000", "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http",
                   "HTTP_HOST": "localhost"}
        # The handler runs in the test's transaction: keep it from closing the connection.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            body = b"".join(StaticFiles(get_wsgi_application())(environ, lambda s, h, *_: status.append(s)))
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return int(status[0].split()[0]), body.decode(errors="replace")
    return get


def thirty_wrong_passwords(client, staff):
    for attempt in range(30):
        response = client.post("/login/", {"username": "sam", "password": f"wrong-{attempt}"})
    response = client.post("/login/", {"username": "sam", "password": "sam-password-1"})
    return response.status_code, response.content.decode()


def thirty_wrong_passwords_admin(client, staff):
    for attempt in range(30):
        client.post("/admin/login/", {"username": "sam", "password": f"wrong-{attempt}"})
    response = client.post("/admin/login/", {"username": "sam", "password": "sam-password-1"})
    return response.status_code, response.content.decode()


def api_session_multipart_garbage(client, staff):
    client.force_login(staff)
    response = client.generic("POST", "/api/check", b"x", content_type="multipart/form-data")
    return response.status_code, response.content.decode()


def command(*arguments: str):
    def run(client, staff):
        with pytest.raises(CommandError) as refused:
            call_command(*arguments, stdout=io.StringIO(), stderr=io.StringIO())
        return 1, str(refused.value)
    return run


def options_of(*arguments: str):
    """Only the command's option parsing: a command such as serve would run if its options passed."""
    def parse(client, staff):
        from django.core.management import load_command_class

        command_name = arguments[0]
        parser = load_command_class("distributor", command_name).create_parser("manage.py", command_name)
        with pytest.raises(CommandError) as refused:
            parser.parse_args(arguments[1:])
        return 1, str(refused.value)
    return parse


OTHER_CASES = {
    # id: (what to do, status, pattern)
    "target-settings-nested-100k-web": (deep_settings, 400, "nested too deeply"),
    "image-name-etc-passwd": (image_named("/etc/passwd"), 400, "no path"),
    "image-name-dot-dot": (image_named("../../../etc/passwd"), 400, "no path"),
    "image-name-hidden": (image_named(".bashrc"), 400, "no path"),
    "form-body-50mb": (form_body_50mb, 413, "may be at most 5,242,880 bytes"),
    "form-text-6mb": (form_text_6mb, 400, "the limit is 5,242,880 bytes"),
    "static-dot-dot-admin-password": (static_escape("/static/%2e%2e/%2e%2e/data/admin_password"), 404, ""),
    "static-dot-dot-secret-key": (static_escape("/static/../../data/secret_key"), 404, ""),
    "static-nul": (static_escape("/static/js/app.js%00"), 404, ""),
    "login-30-wrong-passwords": (thirty_wrong_passwords, 429, "Too many failed logins"),
    "admin-login-30-wrong-passwords": (thirty_wrong_passwords_admin, 429, "Too many failed logins"),
    "api-session-multipart-garbage": (api_session_multipart_garbage, 400, "malformed multipart"),
    "cli-target-settings-nested": (command("target", "add", "deep", "--kind", "stdio", "--set", "print=" + DEEP_JSON),
                                   1, "settings.print: nested too deeply"),
    "cli-target-settings-10e400": (command("target", "add", "deep", "--kind", "genode", "--hosts", "127.0.0.1:1",
                                           "--set", f"connect_timeout={10**400}"), 1, "settings.connect_timeout"),
    "cli-binary-name-dot-dot": (command("binary", "add", __file__, "--name", "a..b"), 1, "nor holding '..'"),
    "cli-export-job-10e30": (command("export", "--format", "taskjobs-csv", "--job", str(10**30), "--output", "/dev/null"),
                             1, "--job: '1000000000000000000000000000000' is not a job id"),
    "cli-relabel-job-10e30": (command("relabel", "--job", str(10**30)), 1, "is not a job id"),
    "cli-relabel-job-superscript": (command("relabel", "--job", "²"), 1, "is not a job id"),
    "cli-campaign-seed-10e30": (command("campaign", "random", "--tasks", "2", "--count", "2", "--utilisation", "0.5",
                                        "--periods", "10,20", "--pkg", "hey", "--seed", str(10**30)),
                                1, "--seed: must be from 0"),
    "cli-max-machines-10e30": (command("distributor", "max", str(10**30)), 1, "must be between 1 and"),
    # waitress listened on 99999's lower 16 bits (34463) while serve printed 99999.
    "cli-serve-port-99999": (options_of("serve", "--port", "99999"), 1, "'99999' is not a port number from 1 to 65535"),
    "cli-serve-port-minus-1": (options_of("serve", "--port", "-1"), 1, "'-1' is not a port number"),
    "cli-submit-admission-10e400": (command("submit", "fixtures/example5.json", "--admission", '{"x": %s}' % ("9" * 401)),
                                    1, "--admission"),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_the_issues_other_cases_are_refused_with_their_cause(client, staff, stdio_target, settings, tmp_path, case):
    settings.MEDIA_ROOT = tmp_path / "media"
    stdio_target.is_default = True
    stdio_target.save()
    before = stored()
    action, status, pattern = OTHER_CASES[case]
    got, message = action(client, staff)
    assert got == status, message[:500]
    assert pattern in message, message[:1000]
    assert stored() == before
