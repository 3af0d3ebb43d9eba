"""Several hosts: each host's heartbeat thread beats and reconciles; machines
go only to live hosts with free workers (and a bound pool to its host); a
silent host's machines are dead and their task-sets requeued."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from distributor import hosts, reconciler
from distributor.hosts import beat
from distributor.models import Machine, Target, TaskSet
from distributor.queue import claim_next, submit_job
from distributor.status import overview
from tests.inprocess import variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


# -- the host beat -------------------------------------------------------------


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


# -- placement -----------------------------------------------------------------


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


# -- silent hosts --------------------------------------------------------------


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
