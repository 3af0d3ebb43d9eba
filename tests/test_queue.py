"""The queue, driven directly (no cluster): claims (requeued first, priority
then age, never twice), finishes (all or nothing, one commit, counted on the
machine's tally) and the end of a job."""
from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from distributor import reconciler
from distributor.models import Attempt, Event, Job, Machine, Tally, TaskJob, TaskSet
from distributor.models.tasksets import BLOCK
from distributor.queue import claim_next, submit_job
from tests.inprocess import finish_now, live_machine, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


# -- claims --------------------------------------------------------------------


def test_claims_take_requeued_tasksets_first(scripted):
    job = submit_job(variants_file(5), target=scripted)
    machine = live_machine(scripted)
    Machine.cancel_launches(Machine.objects.exclude(pk=machine.pk), "the pool's only slot is the test's")
    first = claim_next(machine).taskset
    assert first.variant == 0
    first.fail(machine, "target went away")
    assert claim_next(machine).taskset.pk == first.pk
    assert TaskSet.objects.get(pk=first.pk).attempts == 2
    assert job.tasksets.exclude(state=TaskSet.State.QUEUED).count() == 1  # no other variant started


def test_a_retry_goes_to_another_slot_while_one_is_live_never_straight_back(scripted):
    job = submit_job(variants_file(5), target=scripted)
    Machine.cancel_launches(Machine.objects.all(), "the test's machines only")
    failing, other = live_machine(scripted, 0), live_machine(scripted, 1)
    first = claim_next(failing).taskset
    first.fail(failing, "target went away")
    assert TaskSet.objects.get(pk=first.pk).failed_slot == failing.slot

    Machine.objects.filter(pk=failing.pk).update(state=Machine.State.IDLE, current=None)
    assert claim_next(failing).taskset.variant == 1, "not straight back to the slot that failed it"
    assert claim_next(other).taskset.pk == first.pk, "the other slot takes the retry"

    second = TaskSet.objects.get(job=job, variant=1)
    second.fail(failing, "target went away again")
    Machine.objects.filter(pk=other.pk).update(state=Machine.State.STOPPED)
    Machine.objects.filter(pk=failing.pk).update(state=Machine.State.IDLE, current=None)
    assert claim_next(failing).taskset.pk == second.pk, "with no other slot live it comes back"


def test_claims_follow_priority_then_age(scripted):
    old = submit_job(variants_file(1), target=scripted, name="old")
    urgent = submit_job(variants_file(1), target=scripted, name="urgent", priority=5)
    machine = live_machine(scripted)
    assert claim_next(machine).taskset.job_id == urgent.pk
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.IDLE, current=None)
    TaskSet.objects.filter(machine=machine).update(state=TaskSet.State.FINISHED)
    assert claim_next(machine).taskset.job_id == old.pk


def test_a_lower_priority_set_waits_however_often_others_empty_the_top_jobs_new_block(scripted, monkeypatch):
    """Other machines may take every task-set of the top job's new block
    before this machine claims from it; it then queues the next block, not
    a lower-priority job's task-set (before: after three such blocks it did)."""
    low = submit_job(variants_file(5), target=scripted, name="low")
    top = submit_job(variants_file(BLOCK * 8), target=scripted, name="top", priority=5)
    machine = live_machine(scripted)
    queue_block, emptied = TaskSet.queue_block.__func__, []

    def others_are_quicker(cls, job, tasks_of):
        queued = queue_block(cls, job, tasks_of)
        if queued and job.pk == top.pk and len(emptied) < 5:
            emptied.append(TaskSet.objects.filter(job=top, state=TaskSet.State.QUEUED).update(
                state=TaskSet.State.FINISHED))
        return queued

    monkeypatch.setattr(TaskSet, "queue_block", classmethod(others_are_quicker))
    claim = claim_next(machine)
    assert emptied == [BLOCK] * 5 and claim.taskset.job_id == top.pk
    assert not low.tasksets.exclude(state=TaskSet.State.QUEUED).exists()


def test_no_two_machines_claim_the_same_variant(scripted):
    job = submit_job(variants_file(40), target=scripted)
    machines = [live_machine(scripted, slot) for slot in range(4)]
    claimed: list[int] = []

    def claim_all(machine):
        while (claim := claim_next(machine)) is not None:
            claimed.append(claim.taskset.variant)
            TaskSet.objects.filter(pk=claim.taskset.pk).update(state=TaskSet.State.FINISHED)
        connection.close()

    threads = [threading.Thread(target=claim_all, args=(m,)) for m in machines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(40))
    assert job.tasksets.count() == 40


# -- finishes ------------------------------------------------------------------


def test_a_task_set_taken_away_from_a_live_machine_stores_nothing(scripted):
    job = submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    TaskSet.objects.filter(pk=claim.taskset.pk).update(state=TaskSet.State.QUEUED)
    events = [(claim.taskset.pk, 1, 0, 0, "START", 0, timezone.now())]
    assert claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, [], events) is None
    assert not Event.objects.exists() and not Tally.objects.exists()
    assert Attempt.objects.get().ended_at is None
    assert Machine.objects.get(pk=machine.pk).tasksets_done == 0
    job.refresh_from_db()
    assert job.finished_count == 0


def test_a_claim_and_a_finish_commit_once_each(scripted):
    """On PostgreSQL one statement each, so one round trip and one commit (with
    sixteen machines on two cores every round trip is two context switches and
    every commit a WAL flush); on SQLite one transaction each."""
    from django.test.utils import CaptureQueriesContext

    submit_job(variants_file(BLOCK + 1), target=scripted)
    machine = live_machine(scripted)
    claim_next(machine)  # the first claim queues a block of variants
    TaskSet.objects.filter(machine=machine).update(state=TaskSet.State.FINISHED)
    with CaptureQueriesContext(connection) as claiming:
        claim = claim_next(machine)
    task = claim.task_pks[0]
    rows = [(claim.taskset.pk, task, 0, 0, 0, 5, "EXIT", 10, True), (claim.taskset.pk, task, 1, 10, 10, 15, "EXIT", 20, True)]
    events = [(claim.taskset.pk, 1, seq, 0, kind, at, timezone.now())
              for seq, (kind, at) in enumerate([("START", 0), ("EXIT", 5), ("START", 10), ("EXIT", 15)])]
    with CaptureQueriesContext(connection) as finishing:
        assert claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows, events)

    for captured, statements_on_postgresql in ((claiming, 2), (finishing, 1)):  # a claim looks at the queue first
        sql = [query["sql"] for query in captured.captured_queries]
        if connection.vendor == "postgresql":
            assert len(sql) == statements_on_postgresql, sql
        else:
            assert sum(s.startswith("BEGIN") for s in sql) == 1 and sql[-1] == "COMMIT" and sql.count("COMMIT") == 1
    assert list(TaskJob.objects.values_list("job_number", "start_ms", "end_ms")) == [(0, 0, 5), (1, 10, 15)]
    assert list(Event.objects.values_list("seq", "type", "time_ms")) == [(0, "START", 0), (1, "EXIT", 5),
                                                                         (2, "START", 10), (3, "EXIT", 15)]


def test_finishing_tasksets_count_on_their_machines_tallies_and_never_write_the_jobs_row(scripted):
    """Every machine storing a result used to add to the job's own row and hold
    it until its commit: with 16 machines on PostgreSQL they queued for it
    (bench/README.md). Each machine now adds to its own tally; the job's counts
    are the sums."""
    from django.test.utils import CaptureQueriesContext

    job = submit_job(variants_file(6), target=scripted)
    machines = [live_machine(scripted, slot) for slot in range(2)]
    for machine in machines * 2:
        claim = claim_next(machine)
        with CaptureQueriesContext(connection) as statements:
            assert finish_now(claim, machine)
        written = " ".join(q["sql"] for q in statements.captured_queries)
        assert f"UPDATE {connection.ops.quote_name(TaskSet._meta.db_table)}" in written
        assert f"UPDATE {connection.ops.quote_name(Job._meta.db_table)}" not in written
    claim = claim_next(machines[0])
    assert claim.taskset.fail(machines[0], "target crashed", final=True) == TaskSet.State.BAD
    assert sorted(Tally.objects.filter(job=job).values_list("counter", "finished", "bad")) == [
        (machines[0].pk, 2, 1), (machines[1].pk, 2, 0)]
    job.refresh_from_db()
    assert (job.finished_count, job.bad_count, job.progress()["percent"]) == (4, 1, 83.3)
    assert Job.objects.filter(pk=job.pk).values_list("finished_count", "bad_count").get() == (4, 1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no server-side prepared statements")
def test_hot_path_statements_are_prepared_once_per_connection(scripted):
    """PostgreSQL plans a machine's statements once, not for every task-set:
    they run prepared through one server-binding cursor per connection."""
    from distributor.models.rows import fetch

    submit_job(variants_file(3), target=scripted)
    machine = live_machine(scripted)
    for _ in range(3):
        assert finish_now(claim_next(machine), machine)
    assert fetch("SELECT 1 WHERE %s = 1", [1]) == [(1,)]
    prepared = [row[0] for row in fetch("SELECT statement FROM pg_prepared_statements", [])]
    claims = [sql for sql in prepared if "FOR UPDATE SKIP LOCKED" in sql]
    assert len(claims) == 1 and "$1" in claims[0]  # one plan, reused by all three claims
    assert any("INSERT INTO" in sql and "distributor_tally" in sql for sql in prepared)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="heap-only updates are PostgreSQL's")
def test_a_finish_updates_its_machines_row_in_place(scripted):
    """Storing a result changes no indexed column of the machine's row (it stays
    busy, on the same task-set, until the next claim or the idle check), so
    PostgreSQL writes no index entries for it: a heap-only update."""
    from django.db import transaction

    from distributor.models.rows import fetch

    submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    def counts():  # this connection's updates not yet reported to the statistics collector
        return fetch("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
                     [Machine._meta.db_table])[0]

    with transaction.atomic():
        before = counts()
        assert finish_now(claim, machine)
        after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)  # one update, made in place
    row = Machine.objects.get(pk=machine.pk)
    assert (row.state, row.current_id, row.tasksets_done) == (Machine.State.BUSY, claim.taskset.pk, 1)


# -- the end of a job ----------------------------------------------------------


def test_a_job_ends_when_a_machine_looks_for_work_after_its_last_result(scripted):
    """The last result's machine, or any other, ends the job as it looks at the
    queue after that result's commit: never while a task-set still runs."""
    job = submit_job(variants_file(2), target=scripted)
    first, second = live_machine(scripted, 0), live_machine(scripted, 1)
    claims = {first: claim_next(first), second: claim_next(second)}
    assert finish_now(claims[first], first)
    assert claim_next(first) is None
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING  # the second still runs
    assert finish_now(claims[second], second)
    assert claim_next(first) is None  # looks after the other machine's last result
    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 2, 0)
    assert job.ended_at is not None


def test_the_reconciler_ends_a_job_whose_last_result_nobody_looked_past(scripted):
    """A machine that stops right after storing the last result (a kill, a
    crash) leaves the job's end to the reconciler."""
    job = submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    assert finish_now(claim_next(machine), machine)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    reconciler.tick()
    job.refresh_from_db()
    assert (job.state, job.finished_count) == (Job.State.FINISHED, 1)
