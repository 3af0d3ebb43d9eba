"""The queue, the reconciler and machines, driven directly (no cluster)."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count
from django.utils import timezone

import tests.fake_sessions  # noqa: F401 - registers the "scripted" kind
from distributor import hosts, reconciler
from distributor.status import overview
from distributor import machine as machine_module
from distributor.hosts import beat
from distributor.machine import Lifeline, run_machine
from distributor.models import (Attempt, DistributorConfig, Event, Job, Machine, Orders, Tally, Target, TaskJob,
                                TaskSet)
from distributor.models.tasksets import BLOCK
from distributor.queue import claim_next, submit_job
from sessions.events import RawEvent
from tests.cluster import join_machine_threads
from tests.conftest import taskset_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_broker():
    """Launch messages are recorded instead of queued: these tests run machines
    themselves, on this host, which beats as a machines cluster would."""
    beat()
    with mock.patch("distributor.reconciler.async_task") as sent:
        yield sent


@pytest.fixture
def scripted(db):
    return Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": 0})


def variants_file(count: int, crash_at: set[int] = frozenset()) -> bytes:
    """A job of ``count`` task-sets; those in ``crash_at`` crash the scripted target."""
    tasksets = [{"tasks": [{"pkg": "crash" if i in crash_at else "hey", "period": 10, "numberofjobs": 2}]}
                for i in range(count)]
    import json

    return json.dumps({"tasksets": tasksets}).encode()


def live_machine(target: Target, slot: int = 0) -> Machine:
    """A machine of the test's own, on slots the reconciler does not hand out first."""
    machine = Machine.objects.create(target=target, slot=30 + slot, host="here")
    machine.take(pid=1)
    return machine


def run_launched(until_idle: bool = True, timeout: float = 30) -> None:
    """Run every launched machine in a thread until the queue is empty."""
    DistributorConfig.objects.update(idle_timeout_s=0)
    threads = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat()
        for machine in Machine.objects.filter(state=Machine.State.LAUNCHING):
            thread = threading.Thread(target=run_machine, args=(machine.pk,))
            thread.start()
            threads.append(thread)
        if not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists():
            break
        time.sleep(0.05)
    join_machine_threads(threads)


# -- claims ---------------------------------------------------------------------


def test_claims_take_requeued_tasksets_first(scripted):
    job = submit_job(variants_file(5), target=scripted)
    machine = live_machine(scripted)
    first = claim_next(machine).taskset
    assert first.variant == 0
    first.fail(machine, "target went away")
    assert claim_next(machine).taskset.pk == first.pk
    assert TaskSet.objects.get(pk=first.pk).attempts == 2
    assert job.tasksets.exclude(state=TaskSet.State.QUEUED).count() == 1  # no other variant started


def test_claims_follow_priority_then_age(scripted):
    old = submit_job(variants_file(1), target=scripted, name="old")
    urgent = submit_job(variants_file(1), target=scripted, name="urgent", priority=5)
    machine = live_machine(scripted)
    assert claim_next(machine).taskset.job_id == urgent.pk
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.IDLE, current=None)
    TaskSet.objects.filter(machine=machine).update(state=TaskSet.State.FINISHED)
    assert claim_next(machine).taskset.job_id == old.pk


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


def test_a_fenced_machine_claims_nothing(scripted):
    submit_job(variants_file(2), target=scripted)
    machine = live_machine(scripted)
    Machine.objects.filter(pk=machine.pk).update(lease=None)
    from distributor.models import Fenced

    with pytest.raises(Fenced):
        claim_next(machine)
    assert not TaskSet.objects.exclude(state=TaskSet.State.QUEUED).exists()
    assert not Attempt.objects.exists()


def test_a_machine_declared_dead_stores_no_result(scripted):
    """The finish is all or nothing: a machine that lost its row (declared dead,
    its task-set requeued) writes no task-job, event or counter."""
    job = submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.DEAD)
    task = claim.task_pks[0]
    rows = [(claim.taskset.pk, task, 0, 0, 0, 5, "EXIT", 10, True)]
    events = [(claim.taskset.pk, 1, 0, 0, "START", 0, timezone.now())]
    assert not claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows, events)
    assert not TaskJob.objects.exists() and not Event.objects.exists()
    assert TaskSet.objects.get().state == TaskSet.State.RUNNING
    job.refresh_from_db()
    assert (job.finished_count, Machine.objects.get(pk=machine.pk).tasksets_done) == (0, 0)


def finish_now(claim, machine) -> bool:
    """Store a one-job result for a claimed task-set, as a machine would."""
    rows = [(claim.taskset.pk, claim.task_pks[0], 0, 0, 0, 5, "EXIT", 10, True)]
    return claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows)


def test_claims_and_finishes_renew_the_lease_and_bring_the_operators_orders(scripted):
    """A machine's own statements beat for it and read its stop flags, so its
    lifeline need not poll while task-sets come and go."""
    submit_job(variants_file(2), target=scripted)
    machine = live_machine(scripted)
    stale = timezone.now() - timedelta(minutes=5)
    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=stale)
    claim = claim_next(machine)
    assert claim.orders == Orders("", False)
    assert Machine.objects.get(pk=machine.pk).heartbeat_at > stale + timedelta(minutes=4)

    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=stale, stop_mode=Machine.StopMode.DRAIN,
                                                 reboot_requested=True)
    assert finish_now(claim, machine) == Orders(Machine.StopMode.DRAIN, True)
    assert Machine.objects.get(pk=machine.pk).heartbeat_at > stale + timedelta(minutes=4)


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


def test_a_lifeline_listens_while_the_work_brings_orders_and_polls_when_it_falls_silent(scripted, monkeypatch):
    machine = live_machine(scripted)
    calls = []
    for name in ("_beat", "_read_orders"):
        real = getattr(Lifeline, name)
        monkeypatch.setattr(Lifeline, name, lambda self, real=real, name=name: (calls.append(name), real(self)))
    stop = threading.Event()
    lifeline = Lifeline(machine, DistributorConfig.get(), stop)
    lifeline.heard(Orders("", False))
    lifeline.start()
    try:
        busy_until = time.monotonic() + 1.0
        while time.monotonic() < busy_until:  # task-sets finishing every 20 ms
            lifeline.heard(Orders("", False))
            time.sleep(0.02)
        while_busy = list(calls)
        Machine.objects.filter(pk=machine.pk).update(stop_mode=Machine.StopMode.KILL)
        assert stop.wait(2), "the lifeline read the kill itself once the work fell silent"
    finally:
        lifeline.done.set()
        lifeline.join()
    assert while_busy == []
    assert "_read_orders" in calls  # no beat yet: the work renewed the lease less than a beat ago

    quiet = Lifeline(machine, DistributorConfig.get(), threading.Event())
    quiet.heard(Orders(Machine.StopMode.KILL, False))  # a finish brought the kill
    assert quiet.stop_event.is_set()


def test_a_lifeline_reads_the_orders_when_the_newest_it_has_are_a_poll_interval_old(scripted):
    """Whoever read them last, the work or the lifeline, a kill waits at most
    POLL_SECONDS: the next read is due that long after the newest orders."""
    lifeline = Lifeline(live_machine(scripted), DistributorConfig.get(), threading.Event())
    assert lifeline.seconds_to_next_read() == 0  # nothing known yet: read at once
    lifeline.heard(Orders("", False))
    assert machine_module.POLL_SECONDS - 0.05 < lifeline.seconds_to_next_read() <= machine_module.POLL_SECONDS
    lifeline.heard_at -= machine_module.POLL_SECONDS  # the work fell silent a poll interval ago
    assert lifeline.seconds_to_next_read() == 0
    lifeline.read_at = time.monotonic() - machine_module.POLL_SECONDS / 2  # the lifeline's own read, half as old
    assert 0 < lifeline.seconds_to_next_read() <= machine_module.POLL_SECONDS / 2


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


# -- the reconciler -------------------------------------------------------------


def test_tick_launches_up_to_the_maximum_while_there_is_work(scripted, no_broker):
    reconciler.set_max_machines(3)
    assert not Machine.objects.exists()  # no work, no machines
    submit_job(variants_file(2), target=scripted)
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 2  # no more than the work
    submit_job(variants_file(10), target=scripted)
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 3
    reconciler.tick()
    assert Machine.objects.count() == 3
    assert sorted(Machine.objects.values_list("slot", flat=True)) == [0, 1, 2]
    assert no_broker.call_args.kwargs["cluster"].startswith("machines-")


def test_work_that_arrives_as_the_last_machine_goes_idle_is_not_stranded(scripted):
    """A job submitted between a machine's last empty claim and its stop finds the
    reconciler still counting that machine; the stopping machine hands over."""
    submit_job(variants_file(1), target=scripted)
    run_launched()
    assert not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists()
    reconciler.tick()
    machine = Machine.objects.create(target=scripted, slot=0, host=Machine.objects.first().host)
    empty_claims = []

    def claim_then_submit(claimer):
        claim = claim_next(claimer)
        if claim is None:
            empty_claims.append(claimer.pk)
            if len(empty_claims) == 2:  # the claim after which the idle machine stops (idle timeout 0)
                submit_job(variants_file(1), target=scripted)  # its tick still sees a live machine
        return claim

    with mock.patch("distributor.machine.claim_next", claim_then_submit):
        run_machine(machine.pk)
    assert len(empty_claims) == 2 and Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 1


def test_lowering_the_maximum_drains_the_highest_ids(scripted):
    reconciler.set_max_machines(4)
    submit_job(variants_file(10), target=scripted)
    for machine in Machine.objects.all():
        machine.take(pid=1)
    reconciler.set_max_machines(2)
    draining = set(Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN).values_list("pk", flat=True))
    assert draining == set(Machine.objects.order_by("-pk").values_list("pk", flat=True)[:2])
    reconciler.set_max_machines(3)
    assert Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN).count() == 1


def test_a_value_outside_one_to_cap_is_refused(settings):
    settings.DISTRIBUTOR_CAP = 42
    for bad in (0, 43, -1):
        with pytest.raises(ValidationError, match="between 1 and 42"):
            reconciler.set_max_machines(bad)
    assert DistributorConfig.get().max_machines == 1


def test_a_stale_machine_is_declared_dead_and_its_taskset_requeued(scripted):
    job = submit_job(variants_file(3), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    claim = claim_next(machine)
    Event.objects.create(taskset=claim.taskset, attempt=1, seq=0, task_id=0, type="START", time_ms=0)
    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    result = reconciler.tick()
    assert result["dead"] == [machine.pk]
    taskset = TaskSet.objects.get(pk=claim.taskset.pk)
    assert (taskset.state, taskset.attempts, taskset.losses) == (TaskSet.State.QUEUED, 0, 1)
    assert "stopped beating" in taskset.last_error
    assert Attempt.objects.get(taskset=taskset).result == Attempt.Result.LOST
    assert Machine.objects.get(pk=machine.pk).state == Machine.State.DEAD
    assert result["launched"], "a replacement is launched for the remaining work"
    assert job.tasksets.filter(state=TaskSet.State.RUNNING).count() == 0


def test_a_taskset_left_running_by_a_machine_that_crashed_goes_back_to_the_queue(scripted):
    """A machine that fails on an unexpected error (not a target failure) ends
    as failed; the reconciler hands its task-set to the queue again."""
    submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.FAILED)
    reconciler.tick()
    taskset = TaskSet.objects.get(pk=claim.taskset.pk)
    assert (taskset.state, taskset.attempts, taskset.losses) == (TaskSet.State.QUEUED, 0, 1)
    assert "ended (failed)" in taskset.last_error


def test_the_hosts_heartbeat_thread_runs_the_reconciler(scripted, monkeypatch):
    """No machine ticks any more: each host's heartbeat thread reconciles every
    few seconds, so a dead machine's task-set goes back without the schedule."""
    submit_job(variants_file(1), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    claim_next(machine)
    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    monkeypatch.setattr(hosts, "BEAT_SECONDS", 0.05)
    monkeypatch.setattr(hosts, "RECONCILE_EVERY_SECONDS", 0.1)
    heart = hosts.HostBeat()
    heart.start()
    try:
        deadline = time.monotonic() + 10
        while Machine.objects.get(pk=machine.pk).state != Machine.State.DEAD and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        heart.stop()
    assert Machine.objects.get(pk=machine.pk).state == Machine.State.DEAD
    assert TaskSet.objects.get().state == TaskSet.State.QUEUED


def test_a_launch_nobody_picks_up_is_declared_dead(scripted):
    submit_job(variants_file(1), target=scripted)
    Machine.objects.update(launched_at=timezone.now() - timedelta(hours=1))
    assert len(reconciler.tick()["dead"]) == 1


def test_a_taskset_that_keeps_killing_machines_ends_bad(scripted):
    submit_job(variants_file(1), target=scripted, tries=2)
    for _ in range(2):
        machine = Machine.objects.filter(state=Machine.State.LAUNCHING).get()
        machine.take(pid=1)
        claim_next(machine)
        Machine.objects.filter(pk=machine.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        reconciler.tick()
    taskset = TaskSet.objects.get()
    assert taskset.state == TaskSet.State.BAD and "died 2 time(s)" in taskset.last_error
    assert Job.objects.get().state == Job.State.FINISHED


def test_a_duplicate_launch_delivery_exits_at_once(scripted):
    submit_job(variants_file(1), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    assert "duplicate" in run_machine(machine.pk)


def test_halted_launches_nothing_until_resumed(scripted):
    reconciler.shut_down_all()
    submit_job(variants_file(3), target=scripted)
    assert not Machine.objects.exists()
    reconciler.resume()
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 1


# -- machines -------------------------------------------------------------------


def test_a_job_runs_to_the_end_with_one_result_per_variant(scripted):
    reconciler.set_max_machines(3)
    job = submit_job(variants_file(30), target=scripted)
    run_launched()
    job.refresh_from_db()
    assert job.state == Job.State.FINISHED and job.finished_count == 30
    assert job.tasksets.filter(state=TaskSet.State.FINISHED, outcome=TaskSet.Outcome.SCHEDULABLE).count() == 30
    assert TaskJob.objects.count() == 30 * 2
    per_taskset = TaskJob.objects.values("taskset").annotate(n=Count("pk")).values_list("n", flat=True)
    assert set(per_taskset) == {2}
    assert set(Machine.objects.values_list("state", flat=True)) == {Machine.State.STOPPED}


def test_a_running_tasksets_events_reach_the_database_while_it_runs(scripted, monkeypatch):
    """Events wait in the machine at most EVENT_FLUSH_SECONDS; what is left goes
    in with the result, or before the failure that ends the attempt."""
    submit_job(variants_file(1), target=scripted)
    claim = claim_next(live_machine(scripted))
    events = machine_module.EventBuffer(claim.taskset)
    events.add([RawEvent(0, "START", 0)])
    assert not Event.objects.exists()  # just received: still in the buffer
    monkeypatch.setattr(machine_module, "EVENT_FLUSH_SECONDS", 0)
    events.add([RawEvent(0, "EXIT", 4)])
    stored = list(Event.objects.order_by("seq").values_list("attempt", "seq", "task_id", "type", "time_ms"))
    assert stored == [(1, 0, 0, "START", 0), (1, 1, 0, "EXIT", 4)]
    assert events.take() == []


def test_a_big_result_is_stored_whole(scripted):
    """Hundreds of task-job and event rows (arrays of a column each inside the
    finish's one statement on PostgreSQL, one prepared INSERT on SQLite) land
    with their task-set, each exactly once."""
    job = submit_job(json_file([{"pkg": "hey", "period": 10, "numberofjobs": 80},
                                {"pkg": "pi", "period": 20, "numberofjobs": 70}]), target=scripted)
    run_launched()
    taskset = job.tasksets.get()
    assert taskset.state == TaskSet.State.FINISHED
    assert taskset.taskjobs.count() == 150
    assert sorted(taskset.taskjobs.filter(task__task_id=1).values_list("job_number", flat=True)) == list(range(70))
    assert taskset.events.count() == 2 * 150 + 2  # START and an exit per job, JOBS_DONE per task
    assert list(taskset.events.order_by("seq").values_list("seq", flat=True)) == list(range(302))


def test_failing_tasksets_are_retried_then_bad_while_the_rest_finish(scripted):
    job = submit_job(variants_file(12, crash_at={3, 7}), target=scripted, tries=3)
    run_launched()
    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 10, 2)
    for taskset in job.tasksets.filter(state=TaskSet.State.BAD):
        assert taskset.variant in {3, 7} and taskset.attempts == 3 and taskset.outcome == ""
        assert "crashed" in taskset.last_error
        assert list(Attempt.objects.filter(taskset=taskset).values_list("result", flat=True)) == ["failed"] * 3
        assert not taskset.taskjobs.exists()
    assert ScriptedBoots.count() >= 1 + 2 * 3  # the target restarts after each failure
    stopped = Machine.objects.get()
    assert stopped.state == Machine.State.STOPPED and "crashed" in stopped.last_error  # kept after a clean stop


class ScriptedBoots:
    @staticmethod
    def count() -> int:
        from tests.fake_sessions import ScriptedSession

        return len(ScriptedSession.boots)


def test_a_silent_target_is_a_failure_after_the_timeout(scripted):
    DistributorConfig.get()
    DistributorConfig.objects.update(target_timeout_s=1)
    job = submit_job(json_file([{"pkg": "hang"}]), target=scripted, tries=1)
    started = time.monotonic()
    run_launched()
    taskset = job.tasksets.get()
    assert taskset.state == TaskSet.State.BAD and "silent for 1 s" in taskset.last_error
    assert time.monotonic() - started < 5


def test_kill_puts_the_running_taskset_back_untouched(scripted):
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 5000})
    job = submit_job(variants_file(2), target=scripted)
    thread = threading.Thread(target=run_launched)
    thread.start()
    deadline = time.monotonic() + 10
    while not TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.monotonic()
    reconciler.kill_all()
    while Machine.objects.filter(state__in=Machine.LIVE_STATES).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.monotonic() - killed_at < 1.5
    thread.join()
    assert {(taskset.state, taskset.attempts, taskset.runs) for taskset in job.tasksets.all()} == {
        (TaskSet.State.QUEUED, 0, 0)}
    assert not Attempt.objects.exists() and not Event.objects.exists()
    assert overview()["state"] == "halted"


def json_file(tasks: list[dict]) -> bytes:
    return taskset_file(tasks)


def test_a_taskset_the_target_cannot_run_is_bad_at_once_without_a_restart(scripted):
    from tests.fake_sessions import ScriptedSession

    job = submit_job(taskset_file([{"pkg": "nobinary"}]), target=scripted, tries=5)
    boots_before = len(ScriptedSession.boots)
    run_launched()
    taskset = job.tasksets.get()
    assert (taskset.state, taskset.attempts) == (TaskSet.State.BAD, 1)
    assert "no binary uploaded" in taskset.last_error
    assert len(ScriptedSession.boots) == boots_before + 1  # booted once, never restarted


def test_finished_tasksets_carry_their_analytic_labels(scripted):
    job = submit_job(taskset_file([{"pkg": "hey", "period": 100, "numberofjobs": 2}]), target=scripted)
    run_launched()
    analysis = job.tasksets.get().analysis
    assert analysis["etm"]["name"] and analysis["utilisation"] > 0


# -- several hosts --------------------------------------------------------------


def test_machines_go_to_live_hosts_with_free_workers(scripted):
    from distributor.models import Host

    Host.objects.all().delete()
    beat(capacity=1, name="small")
    beat(capacity=3, name="big")
    Host.objects.create(name="silent", capacity=10, heartbeat_at=timezone.now() - timedelta(hours=1))
    reconciler.set_max_machines(10)
    submit_job(variants_file(20), target=scripted)
    placed = sorted(Machine.objects.values_list("host", flat=True))
    assert placed == ["big", "big", "big", "small"]


def test_a_pool_bound_to_a_host_runs_only_there(scripted):
    from distributor.models import Host

    Host.objects.all().delete()
    beat(capacity=4, name="lab")
    beat(capacity=4, name="cloud")
    Target.objects.filter(pk=scripted.pk).update(host="lab")
    reconciler.set_max_machines(8)
    submit_job(variants_file(20), target=scripted)
    assert set(Machine.objects.values_list("host", flat=True)) == {"lab"}
    assert Machine.objects.count() == 4


def test_no_live_host_means_no_launch(scripted):
    from distributor.models import Host

    Host.objects.update(heartbeat_at=None)
    submit_job(variants_file(3), target=scripted)
    assert not Machine.objects.exists()
    assert overview()["hosts"][0]["alive"] is False


def test_a_silent_hosts_machines_are_dead_and_their_work_requeued(scripted):
    from distributor.models import Host

    submit_job(variants_file(3), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    claim = claim_next(machine)
    Host.objects.filter(name=machine.host).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert reconciler.tick()["dead"] == [machine.pk]  # its own heartbeat is still fresh
    assert "went silent" in Machine.objects.get(pk=machine.pk).last_error
    assert TaskSet.objects.get(pk=claim.taskset.pk).state == TaskSet.State.QUEUED
