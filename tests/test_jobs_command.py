"""`jobs list|show|cancel|resubmit|priority` and the same actions in the API
(issue 17, point 3). Cancelling now through a real machine: test_cancel_now.py."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from distributor.models import Job, TaskSet
from distributor.queue import claim_next, submit_job
from tests.inprocess import live_machine, variants_file
from webapp.models import ApiToken


def jobs(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def three(scripted, alice, staff):
    """Two of alice's jobs (one cancelled) and one of sam's."""
    first = submit_job(variants_file(4), target=scripted, name="first", owner=alice)
    second = submit_job(variants_file(2), target=scripted, name="second", owner=staff, priority=3)
    third = submit_job(variants_file(1), target=scripted, name="third", owner=alice)
    third.cancel()
    return first, second, third


# -- the command -----------------------------------------------------------------


def test_list_shows_jobs_newest_first_and_filters(three):
    first, second, third = three
    header, *rows = jobs("list").splitlines()
    assert header.split()[:3] == ["ID", "STATE", "PRIORITY"]
    assert [int(row.split()[0]) for row in rows] == [third.pk, second.pk, first.pk]
    assert rows[1].split()[:6] == [str(second.pk), "queued", "3", "0%", "0", "2"] and rows[1].endswith("second")
    assert [int(row.split()[0]) for row in jobs("list", "--mine", "alice").splitlines()[1:]] == [third.pk, first.pk]
    assert [int(row.split()[0]) for row in jobs("list", "--state", "cancelled").splitlines()[1:]] == [third.pk]
    assert jobs("list", "--state", "finished") == "no jobs\n"


def test_list_and_show_as_json(three):
    first, _, third = three
    listed = json.loads(jobs("list", "--json", "--mine", "alice"))
    assert [job["id"] for job in listed] == [third.pk, first.pk]
    shown = json.loads(jobs("show", str(first.pk), "--json"))
    assert shown == listed[1]
    assert (shown["name"], shown["state"], shown["owner"], shown["target"]) == ("first", "queued", "alice", "scripted")
    assert shown["progress"]["total"] == 4 and shown["progress"]["queued"] == 4
    assert listed[0]["state"] == "cancelled" and listed[0]["ended_at"]


def test_show_as_text(three):
    text = jobs("show", str(three[0].pk))
    assert "name" in text and "first" in text and "total 4" in text


def test_cancel_then_cancel_now(scripted, alice):
    job = submit_job(variants_file(3), target=scripted, owner=alice)
    machine = live_machine(scripted)
    running = claim_next(machine).taskset
    assert "its running task-sets finish" in jobs("cancel", str(job.pk))
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and not job.cancel_now
    assert set(job.tasksets.exclude(pk=running.pk).values_list("state", flat=True)) == {TaskSet.State.CANCELLED}
    assert "being stopped" in jobs("cancel", str(job.pk), "--now")
    assert machine.orders().cancel == running.pk
    assert "had already ended" in jobs("cancel", str(job.pk), "--now")


def test_resubmit_prints_the_new_jobs_id(three):
    first = three[0]
    new = Job.objects.get(pk=int(jobs("resubmit", str(first.pk))))
    assert (new.name, new.variant_count, new.owner, new.state) == ("first", 4, first.owner, Job.State.QUEUED)


def test_priority_moves_a_job_that_has_not_ended(three):
    first, _, third = three
    assert jobs("priority", str(first.pk), "7") == f"job {first.pk} priority 7\n"
    assert Job.objects.get(pk=first.pk).priority == 7
    machine = live_machine(first.target)
    assert claim_next(machine).taskset.job_id == first.pk  # 7 beats the other's 3
    with pytest.raises(CommandError, match="has ended"):
        jobs("priority", str(third.pk), "1")
    with pytest.raises(CommandError, match="priority: must be an integer from -1000 to 1000"):
        jobs("priority", str(first.pk), "5000")


@pytest.mark.parametrize("args, message", [
    (["show", "999"], "no job 999"), (["cancel", "999"], "no job 999"), (["resubmit", "0"], "no job 0"),
    (["list", "--mine", "nobody"], "no user 'nobody'"), (["list", "--limit", "0"], "--limit"),
    (["list", "--limit", "99999999999999999999"], "--limit: must be from 1 to 1000000000"),
])
def test_bad_arguments_are_refused_naming_them(db, args, message):
    with pytest.raises(CommandError, match=message):
        jobs(*args)


# -- the API -------------------------------------------------------------------


def post(client, url: str, token: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return client.post(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_the_api_lists_a_users_jobs(client, three, alice):
    token = ApiToken.issue(alice, "script")[1]
    body = client.get("/api/jobs?owner=sam", headers={"Authorization": f"Bearer {token}"}).json()
    assert [job["id"] for job in body["results"]] == [three[1].pk]


def test_the_api_cancels_now(client, scripted, alice):
    token = ApiToken.issue(alice, "script")[1]
    job = submit_job(variants_file(2), target=scripted, owner=alice)
    machine = live_machine(scripted)
    running = claim_next(machine).taskset
    response = post(client, f"/api/jobs/{job.pk}/cancel", token, {"now": True})
    assert response.status_code == 200 and response.json()["cancelled"] is True
    assert response.json()["job"]["state"] == "cancelled"
    assert machine.orders().cancel == running.pk
    assert post(client, f"/api/jobs/{job.pk}/cancel", token).json()["cancelled"] is False


@pytest.mark.parametrize("body, status, field", [({"now": "yes"}, 400, "now"), ({"later": 1}, 400, "later")])
def test_the_api_refuses_a_bad_cancel(client, scripted, alice, body, status, field):
    token = ApiToken.issue(alice, "script")[1]
    job = submit_job(variants_file(1), target=scripted, owner=alice)
    response = post(client, f"/api/jobs/{job.pk}/cancel", token, body)
    assert response.status_code == status and field in response.json()["errors"]
    assert Job.objects.get(pk=job.pk).state == Job.State.QUEUED


def test_the_api_sets_the_priority_for_the_owner_or_staff(client, three, alice, staff, django_user_model):
    first, second, third = three
    token = ApiToken.issue(alice, "script")[1]
    response = post(client, f"/api/jobs/{first.pk}/priority", token, {"priority": 9})
    assert response.status_code == 200 and response.json()["priority"] == 9
    assert post(client, f"/api/jobs/{second.pk}/priority", token, {"priority": 9}).status_code == 403
    assert post(client, f"/api/jobs/{second.pk}/priority", ApiToken.issue(staff, "ops")[1], {"priority": -9}).status_code == 200
    assert post(client, f"/api/jobs/{third.pk}/priority", token, {"priority": 1}).status_code == 409
    for body in ({"priority": 1001}, {"priority": "1"}, {"priority": True}, {}):
        response = post(client, f"/api/jobs/{first.pk}/priority", token, body)
        assert response.status_code == 400 and "priority" in response.json()["errors"]
    assert list(Job.objects.order_by("pk").values_list("priority", flat=True)) == [9, -9, 0]
