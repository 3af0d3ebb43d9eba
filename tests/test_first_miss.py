"""A task-set's stored first miss is read back one way (TaskSet.first_miss):
the task-set page, the API and the exports say the same of every row."""
from __future__ import annotations

import csv

import pytest

from distributor import exports
from distributor.exports import Selection
from distributor.models import Job, Target, TaskSet
from distributor.models.tasksets import _miss_fields
from sessions.outcomes import Miss
from webapp.models import ApiToken


@pytest.mark.parametrize("miss", [Miss(0, 0, "DEADLINE", 2), Miss(3, 7, "EXIT_CRITICAL", 40), None])
def test_the_columns_give_back_the_miss_they_were_written_from(miss):
    columns = _miss_fields(miss)
    assert TaskSet(**columns).first_miss == miss
    assert TaskSet.miss_in(columns) == miss


def _readers(client, alice, taskset: TaskSet) -> tuple:
    """What the page, the API and tasksets-csv say of the set's first miss."""
    client.force_login(alice)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    shown = 'id="first-miss"' in page
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}
    api = client.get(f"/api/tasksets/{taskset.pk}", headers=headers).json()["first_miss"]
    rows = csv.DictReader("".join(exports.tasksets_csv(Selection(jobs=(taskset.job_id,)))).splitlines())
    row = next(row for row in rows if row["taskset_id"] == str(taskset.pk))
    return shown, api, tuple(row[name] for name in exports.FIRST_MISS_COLUMNS)


@pytest.mark.django_db
def test_the_page_the_api_and_the_export_agree_on_every_row(client, alice):
    target = Target.objects.create(name="dry", kind="stdio")
    job = Job.objects.create(name="j", owner=alice, target=target, spec={}, variant_count=3, cursor=3,
                             state=Job.State.FINISHED)

    def stored(variant: int, **columns) -> TaskSet:
        return TaskSet.objects.create(job=job, variant=variant, state=TaskSet.State.FINISHED,
                                      outcome="unschedulable", **columns)

    killed = stored(0, **_miss_fields(Miss(0, 0, "EXIT_PERIOD", 100)))
    assert _readers(client, alice, killed) == (
        True, {"task": 0, "job": 0, "kind": "EXIT_PERIOD", "at_ms": 100}, ("0", "0", "EXIT_PERIOD", "100"))
    nothing = stored(1, **_miss_fields(None))
    assert _readers(client, alice, nothing) == (False, None, ("", "", "", ""))
    # Not a row the writer leaves (it fills all four or none), but the page
    # used to call it a DEADLINE miss of job 0, the API no miss, and the
    # export a miss without a kind.
    kindless = stored(2, first_miss_task=1, first_miss_ms=5)
    assert _readers(client, alice, kindless) == (False, None, ("", "", "", ""))
