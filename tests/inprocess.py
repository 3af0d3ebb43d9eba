"""The queue and machines driven in-process, without a cluster: a job of many
variants, a machine of the test's own, a one-job result, and every launched
machine run in a thread of the test. The fixtures these tests share, ``scripted``
(the target) and ``no_broker`` (launches recorded, this host beating), are in
tests/conftest.py."""
from __future__ import annotations

import json
import threading
import time

from distributor.hosts import beat
from distributor.machine import run_machine
from distributor.models import DistributorConfig, Machine, Target, TaskSet
from tests.cluster import join_machine_threads


def variants_file(count: int, crash_at: set[int] = frozenset()) -> bytes:
    """A job of ``count`` task-sets; those in ``crash_at`` crash the scripted target."""
    tasksets = [{"tasks": [{"pkg": "crash" if i in crash_at else "hey", "period": 10, "numberofjobs": 2}]}
                for i in range(count)]
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


def finish_now(claim, machine) -> bool:
    """Store a one-job result for a claimed task-set, as a machine would."""
    rows = [(claim.taskset.pk, claim.task_pks[0], 0, 0, 0, 5, "EXIT", 10, True)]
    return claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows)
