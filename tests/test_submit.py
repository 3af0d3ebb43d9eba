"""`manage.py submit`: the job id, --wait's JSON line, and errors naming the option."""
from __future__ import annotations

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from distributor.models import Job, Machine, Target, TaskJob
from tests.conftest import taskset_file

pytestmark = pytest.mark.django_db(transaction=True)


def submit(*args: str) -> str:
    out = io.StringIO()
    call_command("submit", *args, stdout=out)
    return out.getvalue().strip()


def test_it_prints_the_new_jobs_id(stdio_target):
    job_id = submit("fixtures/hey.json", "--target", "dry")
    assert Job.objects.get(pk=int(job_id)).source_name == "hey.json"


def test_wait_runs_the_example_on_simso_with_one_taskjob_per_released_job():
    Target.default()
    line = json.loads(submit("fixtures/example5.json", "--wait", "--inline", "--timeout", "120"))
    job = Job.objects.get(pk=line["job"])
    assert (line["state"], line["total"], line["finished"], line["bad"]) == ("finished", 8, 8, 0)
    assert job.target.kind == "simso"
    # --inline's machines stop with the command: none left running, none left to be declared dead.
    assert not [thread for thread in threading.enumerate() if "run_machine" in thread.name]
    assert set(Machine.objects.values_list("state", flat=True)) == {Machine.State.STOPPED}
    for taskset in job.tasksets.all():
        released = taskset.tasks.aggregate(n=Sum("numberofjobs"))["n"]
        rows = TaskJob.objects.filter(taskset=taskset)
        assert rows.count() == released
        assert all(row.end_ms >= row.start_ms and row.exit_type for row in rows)


@pytest.mark.parametrize(("args", "words"), [
    (["--offset", "9"], "--offset: must be an integer from 0 to 7"),
    (["--tries", "0"], "--tries: must be an integer from 1 to 100"),
    (["--target", "nowhere"], "--target: no target named 'nowhere'"),
    (["--admission", "{"], "--admission: not JSON"),
])
def test_bad_options_are_named_and_nothing_is_stored(args, words):
    with pytest.raises(CommandError, match=words):
        submit("fixtures/example5.json", *args)
    assert not Job.objects.exists()


def test_a_folder_or_a_missing_file_is_refused_naming_the_cause(tmp_path):
    # A folder was "no such file", which sent the user looking for a typo.
    with pytest.raises(CommandError, match="is a folder, not a file"):
        submit(str(tmp_path))
    with pytest.raises(CommandError, match="no such file"):
        submit(str(tmp_path / "missing.json"))
    assert not Job.objects.exists()


def test_a_bad_file_is_refused_with_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(taskset_file([{"pkg": "a_very_long_binary_name"}]))
    with pytest.raises(CommandError, match=r"tasksets\[0\]\.tasks\[0\]\.pkg: must be 1-15"):
        submit(str(bad))
    assert not Job.objects.exists()
