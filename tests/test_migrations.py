"""Data migrations carry what is stored across a change of schema."""
from __future__ import annotations

import pytest
from django.db import connection
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
