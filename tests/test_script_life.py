"""A script's whole life against `manage.py serve` (issue 17, acceptance): a
token from the command line, a job submitted with a notify URL and waited for
(a local server receives one POST naming it finished), listed as JSON,
every export link of the API downloaded over HTTP with the token alone, and
the Parquet export loaded in pandas with numbers as numbers. Every step is a
separate process, as a script on another machine would run it. An operator's
script sets up a pool and a binary (with its sha256) over HTTP the same way."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distributor import exports
from distributor.models import Binary, Host, Target
from tests.cluster import ROOT, wait_until
from tests.test_notifications import Hook
from tests.test_serve import start_serve, stop_serve

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def manage(env: dict, *args: str, timeout: float = 120) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr}"
    return result.stdout


def fetch(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def send(url: str, token: str, method: str = "POST", body: dict | None = None,
         upload: tuple[bytes, dict] | None = None) -> tuple[int, dict]:
    """A JSON body, or a file and form fields as multipart/form-data, as curl -F would send them."""
    headers = {"Authorization": f"Bearer {token}"}
    if upload is not None:
        data, fields = upload
        boundary = "script-boundary-7d1f"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
                 for key, value in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="hey"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        payload = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    else:
        payload = json.dumps(body or {}).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=payload, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_operators_script_sets_up_pools_and_binaries_through_serve(settings, staff):
    """The API's set-up side over HTTP against serve: a pool created and
    edited, a binary uploaded with its sha256 (a wrong one stores nothing),
    the machines listed."""
    serve, env, port = start_serve(settings.DATA_DIR)
    base = f"http://127.0.0.1:{port}/api"
    try:
        token = manage(env, "token", "create", "sam", "--name", "lab setup").strip()
        status, created = send(f"{base}/targets", token, body={"name": "sim2", "kind": "simso"})
        assert status == 201, created
        status, edited = send(created["url"], token, "PATCH", {"is_default": True})
        assert status == 200 and edited["is_default"] is True
        assert Target.objects.get(is_default=True).name == "sim2"

        data = os.urandom(3 * 2**20)  # past Django's in-memory limit: streamed to a temporary file
        status, refused = send(f"{base}/binaries", token, upload=(data, {"sha256": hashlib.sha256(b"x").hexdigest()}))
        assert status == 400 and "sha256" in refused["errors"] and not Binary.objects.exists()
        status, stored = send(f"{base}/binaries", token, upload=(data, {"sha256": hashlib.sha256(data).hexdigest()}))
        assert status == 201 and (stored["name"], stored["size"]) == ("hey", len(data))
        assert Binary.objects.get().sha256 == hashlib.sha256(data).hexdigest()

        status, _, body = fetch(f"{base}/machines?live=true", token)
        assert status == 200 and "results" in json.loads(body)
    finally:
        stop_serve(serve)


def test_a_scripts_whole_life_against_serve(settings, alice, tmp_path):
    Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": 0})
    # The script's hook listens on this machine: an internal address the site must allow.
    serve, env, port = start_serve(settings.DATA_DIR, extra_env={"DISTRIBUTOR_NOTIFY_INTERNAL": "1"})
    base = f"http://127.0.0.1:{port}"
    hook = Hook()
    try:
        wait_until(lambda: Host.objects.filter(heartbeat_at__isnull=False).exists(), 60, every=0.2,
                   message="the machines cluster beats")
        token = manage(env, "token", "create", "alice", "--name", "campaign script", "--expires", "1").strip()
        assert token.startswith("dst_")

        done = json.loads(manage(env, "submit", "fixtures/example5.json", "--target", "scripted", "--notify", hook.url,
                                 "--wait", "--timeout", "90").strip().splitlines()[-1])
        job_id = done["job"]
        assert (done["state"], done["finished"], done["bad"]) == ("finished", done["total"], 0)
        wait_until(lambda: hook.posts, 30, every=0.2, message="the job's notification arrives")
        assert [(post["job"], post["state"], post["counts"]["finished"]) for _, post in hook.posts] == [
            (job_id, "finished", done["total"])]

        listed = json.loads(manage(env, "jobs", "list", "--json"))
        assert [(job["id"], job["state"]) for job in listed] == [(job_id, "finished")]

        status, _, body = fetch(f"{base}/api/jobs/{job_id}", token)
        assert status == 200
        links = json.loads(body)["links"]["exports"]
        assert set(links) == set(exports.FORMATS)
        for format, url in links.items():
            assert fetch(url)[0] == 401, "no token, no export"
            status, headers, data = fetch(url, token)
            assert status == 200, (format, data[:200])
            assert f"job-{job_id}" in headers["Content-Disposition"]
            if format.endswith("csv"):
                frame = pd.read_csv(io.BytesIO(data))
                assert list(frame.columns)[:2] == ["job_id", "taskset_id"] and set(frame["job_id"]) == {job_id}
            elif format.endswith("parquet"):
                assert pq.read_table(io.BytesIO(data)).num_rows > 0
            else:
                (tmp_path / "job.sqlite3").write_bytes(data)
                assert sqlite3.connect(tmp_path / "job.sqlite3").execute("SELECT COUNT(*) FROM tasksets").fetchone() == (
                    done["total"],)

        output = tmp_path / "taskjobs.parquet"
        manage(env, "export", "--format", "taskjobs-parquet", "--job", str(job_id), "--output", str(output))
        frame = pd.read_parquet(output)
        numeric = [name for name in exports.TASKJOB_COLUMNS if exports.column_type(name) != "string"]
        assert [name for name in numeric if not pd.api.types.is_numeric_dtype(frame[name])] == []
        assert len(frame) > 0 and frame["response_ms"].notna().any()
        assert len(hook.posts) == 1  # once
    finally:
        hook.close()
        stop_serve(serve)
