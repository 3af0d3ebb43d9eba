"""Issue 15, items 1 and 2, through the whole engine: a real machines cluster
runs genode machines against four task-loader peers in real time (events at
their time stamps), and the test compares the database with the peers'
records.

- one peer ends every job EXIT_ERROR: its slot is quarantined after
  quarantine_after (3) target failures, none of which counts against a
  task-set's tries, the job ends with every task-set finished, and once the
  peer is repaired the health check puts the slot back in service;
- ``distributor reboot`` during a job: each peer receives REBOOT once,
  answers again, gets its binaries again, and nothing is lost or stored twice.
"""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from distributor import reconciler
from distributor.models import Attempt, Job, Machine, Slot, Target, TaskSet
from distributor.queue import submit_job
from distributor.status import overview
from tests.cluster import machines_cluster_running, short_timeouts, store_binaries, wait_until
from tests.peer import PeerFarm
from tests.test_genode_engine import assert_nothing_bad_has_an_outcome, assert_results_are_what_the_peers_sent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BINARIES = {"hey": b"\x7fELF hey " * 50, "pi": b"\x7fELF pi " * 300}
QUARANTINE_AFTER = 3


def short_job(variants: int, name: str) -> bytes:
    """``variants`` task-sets of two tasks lasting a few milliseconds each in
    real time (periods of 2 and 3 ms): the job is long in task-sets, short
    in wall time."""
    return json.dumps({"name": name, "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, variants // 2]}}, "period": 2, "priority": 1,
         "numberofjobs": [1, 2]},
        {"pkg": "pi", "period": 3, "priority": 2, "numberofjobs": 1},
    ]}]}).encode()


@pytest.fixture
def machines_cluster(db):
    short_timeouts(target_timeout_s=5)
    for _ in store_binaries(BINARIES):
        # Four machines and a health check's.
        with machines_cluster_running(workers=5) as cluster:
            yield cluster


def genode_target(farm: PeerFarm, **pool_settings) -> Target:
    return Target.objects.create(name="peers", kind="genode", addresses=farm.addresses,
                                 settings={"connect_timeout": 5.0, "startup_timeout": 10.0, **pool_settings})


def wait_for_end(job: Job, timeout: float = 180) -> None:
    wait_until(lambda: not Job.objects.filter(pk=job.pk, state__in=Job.ACTIVE_STATES).exists(), timeout,
               tick=True, message=f"job {job.pk} ends")
    job.refresh_from_db()


def test_a_broken_target_is_quarantined_without_a_bad_taskset_and_its_health_check_returns_it(machines_cluster):
    with PeerFarm(4, time_scale=1, exec_time=1) as farm:
        broken = farm.peers[0]  # slot 0
        broken.break_with("exit_error")
        target = genode_target(farm, quarantine_after=QUARANTINE_AFTER, health_check_every=1)
        reconciler.set_max_machines(4)
        job = submit_job(short_job(600, "one broken board"), target=target, tries=2)

        wait_for_end(job)

        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 600, 0)
        slot = Slot.objects.get(target=target, index=farm.addresses.index(broken.address))
        assert slot.health == Slot.Health.QUARANTINED
        assert re.search(r"^3 target failures in a row; the last: target reported EXIT_ERROR for task \d+", slot.cause)
        shown = next(s for s in overview()["slots"] if s["slot"] == slot.index)
        # A health check may have failed (and said so in the cause) since the slot was read.
        assert shown["health"] == "quarantined"
        assert shown["cause"].startswith(re.match(r"^[^;]*", slot.cause).group())

        on_broken = Attempt.objects.filter(machine__target=target, machine__slot=slot.index,
                                           machine__health_check=False)
        assert on_broken.count() <= QUARANTINE_AFTER + 1, "the broken slot got at most K + 1 task-sets"
        assert set(on_broken.values_list("result", flat=True)) == {Attempt.Result.FORGIVEN}
        assert on_broken.count() == QUARANTINE_AFTER
        retried = TaskSet.objects.filter(attempt__in=on_broken)
        assert all(t.state == TaskSet.State.FINISHED and t.attempts == 1 for t in retried), \
            "a failure the quarantine confirmed is not counted against the tries"
        assert not Attempt.objects.filter(taskset__in=retried, result=Attempt.Result.FINISHED,
                                          machine__slot=slot.index).exists(), "never straight back to the failing slot"
        assert_results_are_what_the_peers_sent(job, farm)
        assert_nothing_bad_has_an_outcome()

        checks_while_broken = broken.tasksets[QUARANTINE_AFTER:]
        assert all(record.fault == "exit_error" for record in checks_while_broken)

        broken.break_with(None)  # repaired
        wait_until(lambda: Slot.objects.get(pk=slot.pk).health == Slot.Health.HEALTHY, 60, tick=True,
                   message="the health check returns the slot to service")
        assert broken.tasksets[-1].fault is None and broken.tasksets[-1].state == "done", "the check ran clean"
        checks = Machine.objects.filter(target=target, slot=slot.index, health_check=True).order_by("pk")
        assert checks.count() == len(checks_while_broken) + 1, "one machine per health check"
        assert all("health check of peers:0 failed: target reported EXIT_ERROR" in m.last_error
                   for m in checks[:len(checks_while_broken)])
        assert not Attempt.objects.filter(machine__in=checks).exists(), "a health check is no task-set of a job"
        assert TaskSet.objects.filter(job=job).count() == 600 and job.bad_count == 0


def test_reboot_during_a_job_reboots_each_target_once_and_loses_nothing(machines_cluster):
    with PeerFarm(4, time_scale=1, exec_time=1, reboot_seconds=0.3) as farm:
        target = genode_target(farm)
        reconciler.set_max_machines(4)
        job = submit_job(short_job(400, "rebooted"), target=target)
        wait_until(lambda: all(len(peer.tasksets) >= 3 for peer in farm.peers), 60, tick=True,
                   message="every peer is at work")

        call_command("distributor", "reboot")

        wait_for_end(job)
        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 400, 0)
        for peer in farm.peers:
            assert peer.commands.count("REBOOT") == 1, peer.address
            assert len(peer.boots) == 2, f"{peer.address} rebooted once"
            assert peer.boots[1].tasksets, f"{peer.address} answered again and ran task-sets after its reboot"
            assert [sorted(boot.received) for boot in peer.boots] == [["hey", "pi"], ["hey", "pi"]], \
                "the binaries went again, once, after the reboot"
            assert peer.errors == []
        assert all(record.fault is None for record in farm.tasksets)
        assert len(farm.tasksets) == 400, "every task-set was started once: none lost, none run twice"
        assert_results_are_what_the_peers_sent(job, farm)  # one stored result per clean run
        assert job.tasksets.filter(state=TaskSet.State.FINISHED, attempts=1).count() == 400
        machines = Machine.objects.filter(target=target)
        assert machines.count() == 4 and all(m.target_boots == 2 and not m.reboot_requested for m in machines)
