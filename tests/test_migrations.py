"""Data migrations carry what is stored across a change of schema."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_TALLIES = [("distributor", "0004_fewer_indexes")]
TALLIES = [("distributor", "0005_job_tallies")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_job_counters_become_tallies_and_back():
    """0005 moves each job's counts from its row into counter 0 of its tallies;
    going back puts the sums on the job's row again."""
    old = migrate(BEFORE_TALLIES)
    Target, Job = old.get_model("distributor", "Target"), old.get_model("distributor", "Job")
    target = Target.objects.create(name="t", kind="stdio")
    counted = Job.objects.create(name="counted", target=target, spec={}, variant_count=10, cursor=10,
                                 finished_count=7, bad_count=2)
    fresh = Job.objects.create(name="fresh", target=target, spec={}, variant_count=10, cursor=0)
    try:
        new = migrate(TALLIES)
        Tally = new.get_model("distributor", "Tally")
        assert list(Tally.objects.values_list("job_id", "counter", "finished", "bad")) == [(counted.pk, 0, 7, 2)]
        Tally.objects.create(job_id=counted.pk, counter=5, finished=1, bad=0)
        back = migrate(BEFORE_TALLIES)
        rows = dict(back.get_model("distributor", "Job").objects.values_list("pk", "finished_count"))
        assert rows == {counted.pk: 8, fresh.pk: 0}
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_tasksets_cancelled_unrun_end_with_their_jobs_cancel():
    """0018: the sets a job's cancel found queued had no end time; they get the job's."""
    old = migrate([("distributor", "0017_host_fault_retries")])
    Target, Job, TaskSet = (old.get_model("distributor", name) for name in ("Target", "Job", "TaskSet"))
    cancelled_at = timezone.now() - timedelta(days=1)
    job = Job.objects.create(name="cancelled", target=Target.objects.create(name="t", kind="stdio"), spec={},
                             variant_count=3, cursor=3, state="cancelled", ended_at=cancelled_at)
    put_back_at = cancelled_at + timedelta(seconds=5)
    for variant, state, ended_at in ((0, "cancelled", None), (1, "cancelled", put_back_at), (2, "finished", None)):
        TaskSet.objects.create(job=job, variant=variant, state=state, ended_at=ended_at)
    try:
        new = migrate([("distributor", "0018_cancelled_tasksets_end_with_their_cancel")])
        ended = new.get_model("distributor", "TaskSet").objects.order_by("variant").values_list("ended_at", flat=True)
        assert list(ended) == [cancelled_at, put_back_at, None]
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
