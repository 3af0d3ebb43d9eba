"""A task-set's wall-clock limit: from its own task model by default, or the
job's time_limit; past it the target has failed (retried, then bad)."""
from __future__ import annotations

import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from distributor import reconciler
from distributor.machine import time_limit
from distributor.models import Attempt, Job, TaskSet
from distributor.queue import MAX_TIME_LIMIT_S, resubmit_job, submit_job
from sessions.outcomes import expected_span_ms
from tests.conftest import taskset_file
from tests.inprocess import run_launched
from webapp.models import ApiToken


def task(**fields) -> dict:
    return {"pkg": "hey", "period": 10, "numberofjobs": 2, "offset": 0, "deadline": 0, "criticaltime": 0, **fields}


def test_the_span_is_the_latest_offset_plus_period_times_jobs():
    assert expected_span_ms([task(period=100, numberofjobs=5), task(period=30, numberofjobs=3, offset=500)]) == 590


def test_back_to_back_jobs_count_their_deadline_or_kill_time_and_are_unbounded_without():
    assert expected_span_ms([task(period=0, numberofjobs=4, deadline=50)]) == 200
    assert expected_span_ms([task(period=0, numberofjobs=4, criticaltime=20, deadline=50)]) == 80
    assert expected_span_ms([task(period=10), task(period=0)]) is None


def test_the_limit_is_the_jobs_own_or_the_task_models_times_a_factor_plus_a_margin(settings):
    settings.TASKSET_TIME_FACTOR, settings.TASKSET_TIME_MARGIN_S = 3, 20
    tasks = [task(period=1000, numberofjobs=10)]
    assert time_limit(Job(time_limit_s=None), tasks) == (50.0, "its task model's 10 s × 3 + 20 s")
    assert time_limit(Job(time_limit_s=7), tasks) == (7.0, "the job's time_limit")
    assert time_limit(Job(time_limit_s=None), [task(period=0)]) == (None, "")


@pytest.mark.django_db
@pytest.mark.parametrize("value", [0, -1, MAX_TIME_LIMIT_S + 1, "60", 1.5, True])
def test_a_bad_time_limit_is_refused_naming_the_option(stdio_target, value):
    with pytest.raises(ValidationError) as error:
        submit_job(taskset_file(), target=stdio_target, time_limit=value)
    assert "time_limit" in error.value.message_dict
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_time_limit_is_accepted_from_the_api_the_form_and_submit_and_kept_on_resubmit(client, alice, stdio_target,
                                                                                        tmp_path):
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}
    body = {"spec": json.loads(taskset_file()), "target": "dry", "time_limit": 90}
    response = client.post("/api/jobs", json.dumps(body), content_type="application/json", headers=headers)
    assert response.status_code == 201 and response.json()["time_limit_s"] == 90
    bad = client.post("/api/jobs", json.dumps({**body, "time_limit": 0}), content_type="application/json",
                      headers=headers)
    assert bad.status_code == 400 and "time_limit" in bad.json()["errors"]

    client.force_login(alice)
    form = {"text": taskset_file().decode(), "target": "dry", "offset": "0", "priority": "0", "time_limit": "45"}
    assert client.post("/submit/", form).status_code == 302
    assert client.post("/submit/", {**form, "time_limit": "0"}).status_code == 400

    path = tmp_path / "t.json"
    path.write_bytes(taskset_file())
    call_command("submit", str(path), "--target", "dry", "--time-limit", "30", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--time-limit: must be a whole number of seconds"):
        call_command("submit", str(path), "--target", "dry", "--time-limit", "0", stdout=io.StringIO())

    assert sorted(Job.objects.values_list("time_limit_s", flat=True)) == [30, 45, 90]
    assert resubmit_job(Job.objects.get(time_limit_s=45)).time_limit_s == 45


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize("job_limit, expected", [
    (1, "wall-clock limit of 1 s (the job's time_limit)"),
    (None, "wall-clock limit of 1.04 s (its task model's 0.02 s × 2 + 1 s)"),
])
def test_a_taskset_past_its_limit_is_a_target_failure_retried_then_bad(scripted, settings, job_limit, expected):
    """The scripted target takes 4 s per task-set; its task model says 20 ms."""
    settings.TASKSET_TIME_FACTOR, settings.TASKSET_TIME_MARGIN_S = 2, 1
    scripted.settings = {"duration_ms": 4000}
    scripted.save(update_fields=["settings"])
    reconciler.set_max_machines(1)
    job = submit_job(taskset_file(), target=scripted, tries=2, time_limit=job_limit)
    run_launched(timeout=60)
    taskset = TaskSet.objects.get(job=job)
    assert taskset.state == TaskSet.State.BAD and not taskset.taskjobs.exists()
    assert expected in taskset.last_error
    assert list(Attempt.objects.filter(taskset=taskset).values_list("result", flat=True)) == ["failed", "failed"]
