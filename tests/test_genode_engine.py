"""Genode targets through the whole engine (issue 4's acceptance).

A real machines cluster (qcluster processes, tests/cluster.py) runs genode
machines against task-loader peers on 127.0.0.x (tests/peer), and the test
compares the database with the peers' own records: what each peer was sent
(descriptions, OPTIMIZE goals, binaries per boot) and every event it sent.
The job numbers, times and exit types of the stored task-jobs are worked out
here from the peers' raw events, independently of sessions.events.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from unittest import mock

import pytest
from defusedxml import ElementTree as SafeET
from django.db import connection

from distributor import reconciler
from distributor.models import Attempt, Job, Machine, Target, TaskJob, TaskSet
from distributor.models.tasksets import BLOCK
from distributor.queue import claim_next, submit_job
from distributor.taskfile import taskset_xml
from tests.cluster import machines_cluster_running, short_timeouts, store_binaries, stored_taskjobs, wait_until
from tests.peer import PeerFarm, peer_taskjobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BINARIES = {"hey": b"\x7fELF hey " * 50, "pi": b"\x7fELF pi " * 300}
ADMISSION = {"query_interval": 1000, "strategy": "fair"}
ADMISSION_XML = "<optimize><query_interval>1000</query_interval><strategy>fair</strategy></optimize>"
JOB_END_S = 120


def exec_time(task: dict, number: int) -> int:
    """A job runs arg1 ms on the peer, so some pi jobs overrun their period
    of 7 ms (EXIT_PERIOD, NOT_SCHEDULED): results of every kind come back."""
    return task["arg1"]


def job_file(hey_args: int, pi_args: int, hey_period: int = 10, name: str = "genode") -> bytes:
    """hey_args × 2 × pi_args × 2 variants, each with its own description."""
    return json.dumps({"name": name, "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, hey_args]}}, "period": hey_period, "priority": 1,
         "numberofjobs": [1, 2]},
        {"pkg": "pi", "config": {"arg1": {"range": [0, pi_args]}}, "period": [0, 7], "priority": 2,
         "numberofjobs": 3},
    ]}]}).encode()


@pytest.fixture
def configured(db):
    return short_timeouts(target_timeout_s=10)


@pytest.fixture
def binaries(db):
    """Stored where the cluster's processes look (DATA_DIR/uploads)."""
    yield from store_binaries(BINARIES)


@pytest.fixture
def machines_cluster(configured, binaries):
    with machines_cluster_running(workers=5) as cluster:
        yield cluster


def genode_target(farm: PeerFarm) -> Target:
    return Target.objects.create(name="peers", kind="genode", addresses=farm.addresses,
                                 settings={"connect_timeout": 5.0, "startup_timeout": 10.0})


def wait_for_end(*jobs: Job, timeout: float = JOB_END_S) -> None:
    pks = [job.pk for job in jobs]
    wait_until(lambda: not Job.objects.filter(pk__in=pks, state__in=Job.ACTIVE_STATES).exists(), timeout,
               tick=True, message=f"jobs {pks} end")
    for job in jobs:
        job.refresh_from_db()


# -- what the peers received -------------------------------------------------------


def goal_of(optimize_xml: str | None) -> dict | None:
    """A received OPTIMIZE goal as {element: value} (the element order is
    checked by test_the_optimize_goal_keeps_its_order_on_every_database)."""
    if optimize_xml is None:
        return None
    root = SafeET.fromstring(optimize_xml)
    assert root.tag == "optimize" and not root.attrib and not (root.text or "").strip()
    goal = {child.tag: child.text for child in root}
    assert len(goal) == len(root), "each element once"
    return {name: int(value) if value.isdigit() else value for name, value in goal.items()}


def description(taskset: TaskSet) -> str:
    """The task-set's XML as its tasks are stored: what every attempt sends."""
    return taskset_xml([task.as_dict() for task in taskset.tasks.all()])


def records_by_description(farm: PeerFarm) -> dict[str, list[tuple]]:
    """description -> [(peer address, record)] of every START any peer saw."""
    found = defaultdict(list)
    for peer in farm.peers:
        for record in peer.tasksets:
            found[record.descs_xml].append((peer.address, record))
    return found


def assert_results_are_what_the_peers_sent(job: Job, farm: PeerFarm) -> dict[str, list[tuple]]:
    """Every finished task-set's task-jobs and events equal the one clean run
    a peer made of its description, on the machine of that peer's address."""
    by_description = records_by_description(farm)
    finished = job.tasksets.filter(state=TaskSet.State.FINISHED).select_related("machine")
    assert finished.count() == job.finished_count
    for taskset in finished:
        runs = by_description[description(taskset)]
        clean = [(address, record) for address, record in runs if record.fault is None]
        assert len(clean) == 1, f"{taskset}: {len(clean)} clean runs on the peers"
        address, record = clean[0]
        assert farm.peer(address).wait_for(lambda: record.state in ("done", "stopped"))
        assert taskset.machine.address == address
        assert stored_taskjobs(taskset) == peer_taskjobs(record.events), taskset
        stored_events = taskset.events.filter(attempt=taskset.runs).values_list("task_id", "type", "time_ms")
        assert list(stored_events) == record.events, taskset
        all_exit = all(kind == "EXIT" for _, _, _, _, kind in peer_taskjobs(record.events))
        assert taskset.outcome == (TaskSet.Outcome.SCHEDULABLE if all_exit else TaskSet.Outcome.UNSCHEDULABLE)
    return by_description


def assert_nothing_bad_has_an_outcome() -> None:
    bad = TaskSet.objects.filter(state=TaskSet.State.BAD)
    assert not bad.exclude(outcome="").exists()
    assert not TaskJob.objects.filter(taskset__in=bad).exists()


# -- the acceptance ----------------------------------------------------------------


def test_a_400_taskset_job_stores_exactly_what_four_peers_sent(machines_cluster):
    with PeerFarm(4, time_scale=0, exec_time=exec_time) as farm:
        target = genode_target(farm)
        reconciler.set_max_machines(4)
        plain = submit_job(job_file(5, 2, hey_period=20, name="plain"), target=target)
        goal = submit_job(job_file(10, 10, name="goal"), target=target, admission=ADMISSION)
        assert (plain.total, goal.total) == (40, 400)

        wait_for_end(plain, goal)

        for job in (plain, goal):
            assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, job.total, 0)
            assert job.tasksets.filter(state=TaskSet.State.FINISHED, attempts=1).count() == job.total
            by_description = assert_results_are_what_the_peers_sent(job, farm)
        assert len(by_description) == 440, "every variant has a description of its own"
        assert len(farm.tasksets) == 440, "every task-set was started once"

        plain_xml = {description(taskset) for taskset in plain.tasksets.all()}
        for address, record in (run for runs in by_description.values() for run in runs):
            expected = None if record.descs_xml in plain_xml else ADMISSION
            assert goal_of(record.optimize_xml) == expected, (address, record.descs_xml)

        unexpected_faults = [record.fault for record in farm.tasksets if record.fault]
        assert unexpected_faults == []
        for peer in farm.peers:
            assert peer.errors == []
            assert len(peer.boots) == 1 and peer.connections == 1, peer.address
            assert sorted(peer.boot.received) == ["hey", "pi"], "each binary once per boot"
            assert peer.tasksets, f"peer {peer.address} got no work"
        machines = Machine.objects.filter(target=target)
        assert sorted(machines.values_list("address", flat=True)) == sorted(farm.addresses)
        assert all(machine.target_boots == 1 and machine.last_error == "" for machine in machines)


FAULTS = [
    ("hang", r"^target silent for 1 s$"),
    ("garbage", r"^malformed XML in an event message"),
    ("drop", r"^target closed the connection while waiting for events"),
    ("exit_error", r"^target reported EXIT_ERROR for task \d+ at \d+ ms$"),
    ("slow_start", r"^target closed the connection while waiting for events"),
    ("wrong_job_count", r"^task 0: JOBS_DONE after \d+ jobs, expected \d+$"),
]


@pytest.mark.parametrize("fault, cause", FAULTS, ids=[fault for fault, _ in FAULTS])
def test_a_fault_on_one_target_is_retried_and_the_others_keep_working(machines_cluster, configured, fault, cause):
    configured.target_timeout_s = 1 if fault == "hang" else 10
    configured.save()
    with PeerFarm(3, time_scale=0, exec_time=exec_time, slow_start_seconds=0.5) as farm:
        target = genode_target(farm)
        reconciler.set_max_machines(3)
        # The other two machines must not finish the job while the faulty
        # target is away (1 s of silence, 0.5 s of reboot); they run a
        # task-set in a few milliseconds: 640 task-sets.
        long_outage = fault in ("hang", "slow_start")
        job = submit_job(job_file(32 if long_outage else 12, 5), target=target, admission=ADMISSION)
        faulty = farm.peers[0]
        wait_until(lambda: len(faulty.tasksets) >= 2, 30, tick=True, message="the faulty peer is at work")
        faulty.inject(fault)

        wait_for_end(job)

        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, job.total, 0)
        assert_results_are_what_the_peers_sent(job, farm)
        struck = [record for record in faulty.tasksets if record.fault]
        assert [record.fault for record in struck] == [fault], "the fault struck once, on its peer"
        assert faulty.tasksets[-1].fault is None, "the faulty peer ran task-sets after its fault"
        taskset = next(t for t in job.tasksets.all() if description(t) == struck[0].descs_xml)
        assert (taskset.state, taskset.attempts) == (TaskSet.State.FINISHED, 2)
        assert re.search(cause, taskset.last_error), taskset.last_error

        failed, retried = Attempt.objects.filter(taskset=taskset).order_by("number").select_related("machine")
        assert (failed.result, retried.result) == (Attempt.Result.FAILED, Attempt.Result.FINISHED)
        assert re.search(cause, failed.error), failed.error
        assert failed.machine.address == faulty.address
        noticed = (failed.ended_at - failed.started_at).total_seconds()
        if fault == "hang":
            assert 0.9 <= noticed < 2.0, f"a silent target was noticed after {noticed:.2f} s (target_timeout 1 s)"
            others_finished = Attempt.objects.filter(
                result=Attempt.Result.FINISHED, ended_at__range=(failed.started_at, failed.ended_at),
            ).exclude(machine=failed.machine)
            assert others_finished.count() >= 2, "the other machines kept working while one target hung"
        else:
            assert noticed < 1.0, f"the {fault} was noticed after {noticed:.2f} s (target_timeout 10 s)"
        assert Attempt.objects.exclude(result=Attempt.Result.FINISHED).count() == 1

        faulty_machine = failed.machine
        faulty_machine.refresh_from_db()
        assert faulty_machine.target_boots == 2, "the faulty target was restarted once"
        for machine in Machine.objects.filter(target=target).exclude(pk=faulty_machine.pk):
            assert machine.target_boots == 1 and machine.tasksets_done > 0, machine
        for peer in farm.peers[1:]:
            assert (len(peer.boots), peer.connections, peer.errors) == (1, 1, []), peer.address
            assert sorted(peer.boot.received) == ["hey", "pi"]
        assert faulty.errors == [], "every START found its binaries on the target"
        if fault == "slow_start":
            # The peer rebooted: its binaries went again, once, to the new boot.
            assert [sorted(boot.received) for boot in faulty.boots] == [["hey", "pi"], ["hey", "pi"]]
        assert all(goal_of(record.optimize_xml) == ADMISSION for record in farm.tasksets)
        assert_nothing_bad_has_an_outcome()


def test_a_taskset_that_keeps_failing_is_bad_after_its_tries_without_an_outcome(machines_cluster):
    with PeerFarm(1, time_scale=0, exec_time=exec_time) as farm:
        target = genode_target(farm)
        job = submit_job(job_file(5, 2), target=target, tries=2)
        peer = farm.peers[0]
        wait_until(lambda: len(peer.tasksets) >= 3, 30, tick=True, message="the peer is at work")
        peer.inject("exit_error")
        peer.inject("exit_error")

        wait_for_end(job)

        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, job.total - 1, 1)
        bad = job.tasksets.get(state=TaskSet.State.BAD)
        assert (bad.attempts, bad.outcome) == (2, "")
        assert re.search(r"^target reported EXIT_ERROR for task \d+", bad.last_error)
        attempts = Attempt.objects.filter(taskset=bad).order_by("number")
        assert [a.result for a in attempts] == [Attempt.Result.FAILED, Attempt.Result.FAILED]
        assert all("EXIT_ERROR" in a.error for a in attempts)
        assert bad.events.filter(type="EXIT_ERROR").count() == 2, "the failed attempts' events are kept as evidence"
        assert [record.descs_xml for record in peer.tasksets if record.fault] == [description(bad)] * 2
        assert_nothing_bad_has_an_outcome()
        assert_results_are_what_the_peers_sent(job, farm)


def test_the_optimize_goal_keeps_its_order_on_every_database(stdio_target):
    """The bytes of OPTIMIZE must not depend on the database: the goal is
    written from the stored Job.admission, which must keep the user's order
    (a jsonb column sorts keys shortest first)."""
    from sessions.genode_protocol import admission_xml

    job = submit_job(job_file(1, 1), target=stdio_target, admission=ADMISSION)
    job.refresh_from_db()

    assert admission_xml(job.admission) == ADMISSION_XML


# -- what the benchmarks found (bench/README.md) ---------------------------------------


def test_concurrent_claims_take_each_variant_once_and_lock_the_job_once_per_block(stdio_target):
    """Four machines claiming at once from one job take every variant exactly
    once, and move the job's cursor (the one lock they share) once per block
    of variants, not once per task-set. Before 4bbd6a3 a claim moved the
    cursor by compare-and-set and losers retried: about 10 lost updates per
    claim with 16 machines on PostgreSQL; until the blocks, every claim held
    the job's row for its whole transaction, and with 16 machines most
    PostgreSQL backends waited for it."""
    import os
    import threading

    machines = []
    for slot in range(4):
        machine = Machine.objects.create(target=stdio_target, slot=slot, host="claims")
        machine.take(os.getpid())
        machines.append(machine)
    job = submit_job(job_file(10, 2), target=stdio_target)  # 80 variants
    start, claimed, blocks = threading.Barrier(len(machines)), [], []
    queue_block = TaskSet.queue_block

    def counting_queue_block(job, tasks_of):
        opened = queue_block(job, tasks_of)
        blocks.append(opened)
        return opened

    def claim_all(machine: Machine) -> None:
        try:
            start.wait()
            while (claim := claim_next(machine)) is not None:
                claimed.append(claim.taskset.variant)
                TaskSet.objects.filter(pk=claim.taskset.pk).update(state=TaskSet.State.FINISHED)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim_all, args=(machine,)) for machine in machines]
    with mock.patch.object(TaskSet, "queue_block", counting_queue_block):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(claimed) == list(range(job.total))
    assert job.tasksets.count() == job.total
    assert blocks.count(True) == math.ceil(job.total / BLOCK), blocks


def test_a_claimed_taskset_carries_its_jobs_goal_and_monitors(stdio_target, django_assert_num_queries):
    """The machine reads ``taskset.job.monitors`` and ``taskset.job.admission``
    for every task-set; they should come with the claim, not cost two more
    SELECTs per task-set."""
    import os

    machine = Machine.objects.create(target=stdio_target, slot=0, host="claims")
    machine.take(os.getpid())
    submit_job(job_file(1, 1), target=stdio_target, admission=ADMISSION)

    claim = claim_next(machine)

    with django_assert_num_queries(0):
        assert (claim.taskset.job.admission, claim.taskset.job.monitors) == (ADMISSION, [])
