"""A script's whole life against `manage.py serve` (issue 17, acceptance): a
token from the command line, a job submitted with a notify URL and waited for
(a local server receives one POST naming it finished), listed as JSON,
every export link of the API downloaded over HTTP with the token alone, and
the Parquet export loaded in pandas with numbers as numbers. Every step is a
separate process, as a script on another machine would run it."""
from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pandas as pd
import pyarrow.parquet as pq
import pytest

from distributor import exports
from distributor.models import Host, Target
from tests.cluster import ROOT, wait_until
from tests.test_notifications import Hook
from tests.test_serve import all_descendants, descendants_alive, start_serve

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


def test_a_scripts_whole_life_against_serve(settings, alice, tmp_path):
    Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": 0})
    serve, env, port = start_serve(settings.DATA_DIR)
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
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
        for pid in descendants_alive(all_descendants(serve.pid)):
            os.kill(pid, signal.SIGKILL)
