"""Machines through the API: everyone lists and reads them; staff drain or
kill one, and a real machine (run_machine in a thread) obeys: a kill puts its
task-set back untouched, a drain lets it finish, the other machines and the
queue carry on."""
from __future__ import annotations

import threading
import time

import pytest

from distributor.models import AuditEntry, Machine, Target, TaskSet
from distributor.queue import submit_job
from tests.inprocess import run_launched, variants_file


def _get(client, url: str, token: str):
    return client.get(url, headers={"Authorization": f"Bearer {token}"})


def _post(client, url: str, token: str):
    return client.post(url, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.django_db
def test_everyone_lists_and_reads_machines(client, token, stdio_target):
    idle = Machine.objects.create(target=stdio_target, slot=0, host="h1", state=Machine.State.IDLE)
    stopped = Machine.objects.create(target=stdio_target, slot=0, host="h1", state=Machine.State.STOPPED)
    listing = _get(client, "/api/machines", token).json()
    assert [row["id"] for row in listing["results"]] == [stopped.pk, idle.pk]
    assert [row["id"] for row in _get(client, "/api/machines?live=true", token).json()["results"]] == [idle.pk]
    assert [row["id"] for row in _get(client, "/api/machines?state=stopped", token).json()["results"]] == [stopped.pk]
    assert _get(client, "/api/machines?target=dry", token).json()["count"] == 2
    row = _get(client, f"/api/machines/{idle.pk}", token).json()
    assert (row["target"], row["slot"], row["host"], row["state"], row["live"], row["current"]) == (
        "dry", 0, "h1", "idle", True, None)


@pytest.mark.django_db
@pytest.mark.parametrize("query, field", [("state=asleep", "state"), ("target=nowhere", "target"),
                                          ("live=yes", "live"), ("page=0", "page")])
def test_bad_machine_queries_get_400(client, token, stdio_target, query, field):
    response = _get(client, f"/api/machines?{query}", token)
    assert response.status_code == 400 and field in response.json()["errors"]


@pytest.mark.django_db
def test_orders_are_for_staff_and_live_machines(client, token, staff_token, stdio_target):
    idle = Machine.objects.create(target=stdio_target, slot=0, host="h1", state=Machine.State.IDLE)
    stopped = Machine.objects.create(target=stdio_target, slot=1, host="h1", state=Machine.State.STOPPED)
    assert _post(client, f"/api/machines/{idle.pk}/kill", token).status_code == 403
    assert Machine.objects.get(pk=idle.pk).stop_mode == ""
    response = _post(client, f"/api/machines/{stopped.pk}/drain", staff_token)
    assert response.status_code == 409 and "state" in response.json()["errors"]
    assert _post(client, f"/api/machines/{idle.pk}/explode", staff_token).status_code == 404
    assert _post(client, "/api/machines/999/kill", staff_token).status_code == 404
    response = _post(client, f"/api/machines/{idle.pk}/drain", staff_token)
    assert response.status_code == 200 and response.json()["machine"]["stop_mode"] == "drain"
    assert [(e.actor, e.action, e.changes) for e in AuditEntry.objects.all()] == [
        ("sam", "drain", {"stop_mode": ["", "drain"]})]


def _running_machine(target: Target, duration_ms: int):
    """A job of two task-sets on one real machine, waited for until it runs the first."""
    Target.objects.filter(pk=target.pk).update(settings={"duration_ms": duration_ms})
    job = submit_job(variants_file(2), target=target)
    thread = threading.Thread(target=run_launched)
    thread.start()
    deadline = time.monotonic() + 10
    while not TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return job, thread, Machine.objects.get(state=Machine.State.BUSY)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
def test_a_killed_machine_puts_its_taskset_back_untouched(client, staff_token, scripted):
    job, thread, machine = _running_machine(scripted, 5000)
    killed_at = time.monotonic()
    response = _post(client, f"/api/machines/{machine.pk}/kill", staff_token)
    assert response.status_code == 200 and response.json()["machine"]["stop_mode"] == "kill"
    thread.join(10)
    assert time.monotonic() - killed_at < 3
    assert Machine.objects.get(pk=machine.pk).state == Machine.State.STOPPED
    assert {(ts.state, ts.attempts) for ts in job.tasksets.all()} == {(TaskSet.State.QUEUED, 0)}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_broker")
def test_a_drained_machine_finishes_its_taskset_then_stops(client, staff_token, scripted):
    job, thread, machine = _running_machine(scripted, 1000)
    running = TaskSet.objects.get(state=TaskSet.State.RUNNING)
    assert _post(client, f"/api/machines/{machine.pk}/drain", staff_token).status_code == 200
    thread.join(15)
    assert Machine.objects.get(pk=machine.pk).state == Machine.State.STOPPED
    assert TaskSet.objects.get(pk=running.pk).state == TaskSet.State.FINISHED
    assert sorted(job.tasksets.values_list("state", flat=True)) == [TaskSet.State.FINISHED, TaskSet.State.QUEUED]
