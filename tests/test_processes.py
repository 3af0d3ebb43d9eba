"""The launcher and its clusters (distributor.processes): what machines left
behind in a crash is cleaned up by asking every registered kind; ``workers``
stops on SIGTERM and SIGINT (even started with SIGINT ignored) with its
machines drained or killed, and a cluster whose launcher is gone stops."""
from __future__ import annotations

import json
import logging
import os
import signal

import pytest
from django.db.models import Sum

from distributor import processes
from distributor.models import Attempt, Event, Host, Job, Machine, Target, TaskJob, TaskSet
from distributor.queue import submit_job
from sessions.base import HostEnvironment, Session
from tests.cluster import ROOT, wait_until
from tests.test_serve import all_descendants, descendants_alive, start_launcher, stop_leftovers, stops_cleanly


def test_the_clean_up_asks_every_kind_and_one_failing_stops_no_other(db, monkeypatch, settings, caplog):
    settings.DISTRIBUTOR_HOST = "here"
    asked = []

    class Tidy(Session):
        @classmethod
        def clean_up_host(cls, live_machines, host: HostEnvironment) -> list[str]:
            asked.append(("tidy", list(live_machines), host.name))
            return ["tap7"]

    class Broken(Session):
        @classmethod
        def clean_up_host(cls, live_machines, host: HostEnvironment) -> list[str]:
            asked.append(("broken", list(live_machines), host.name))
            raise OSError("no network here")

    monkeypatch.setattr(processes, "SESSION_KINDS", {"tidy": Tidy, "broken": Broken, "plain": Session})
    with caplog.at_level(logging.INFO, logger="distributor"):
        processes._clean_up_host()
    assert asked == [("broken", [], "here"), ("tidy", [], "here")]
    assert "tidy: deleted what dead machines left: tap7" in caplog.text


@pytest.fixture
def own_handlers():
    """Signal handlers a test installs in this process are put back after it."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_first_signal_stops_in_the_chosen_mode_and_a_second_one_kills(own_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as inherited from nohup or a script's background job
    stop = processes.StopSignals("drain")
    stop.install()
    signal.raise_signal(signal.SIGINT)
    assert (stop.requested, stop.mode) == (1, "drain")
    signal.raise_signal(signal.SIGTERM)
    assert (stop.requested, stop.mode) == (2, "kill")


def test_sighup_means_the_launcher_is_gone_and_asks_for_a_kill(own_handlers):
    stop = processes.StopSignals("drain")
    stop.install()
    signal.raise_signal(signal.SIGHUP)
    assert (stop.requested, stop.mode) == (1, "kill")


def test_the_watchdog_asks_for_a_kill_once_the_parent_is_not_the_launcher():
    owned = processes.OwnedCluster("drain")
    owned._watch(launcher=os.getppid() + 1_000_000)  # a pid that is not this process's parent
    assert (owned.signals.requested, owned.signals.mode) == (1, "kill")


# -- whole processes ---------------------------------------------------------------

def job_with_long_tasksets(duration_ms: int) -> Job:
    """example5 (8 task-sets) on a scripted target whose task-sets take
    ``duration_ms`` each, two machines at a time."""
    from distributor.reconciler import set_max_machines

    target = Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": duration_ms})
    set_max_machines(2)
    return submit_job((ROOT / "fixtures" / "example5.json").read_bytes(), filename="example5.json", target=target)


def running_tasksets(job: Job, count: int = 2) -> list[int]:
    wait_until(lambda: job.tasksets.filter(state=TaskSet.State.RUNNING).count() == count, 90, every=0.2,
               message=f"{count} task-sets run")
    return sorted(job.tasksets.filter(state=TaskSet.State.RUNNING).values_list("pk", flat=True))


def assert_finished_once(tasksets) -> None:
    """Each finished task-set was run once and stored its task-jobs once."""
    for taskset in tasksets:
        assert (taskset.state, taskset.attempts, taskset.runs) == (TaskSet.State.FINISHED, 1, 1), taskset.pk
        jobs = taskset.tasks.aggregate(n=Sum("numberofjobs"))["n"]
        assert TaskJob.objects.filter(taskset=taskset).count() == jobs, taskset.pk


def assert_untouched(pks: list[int]) -> None:
    """Back in the queue as if never started: no try used, no attempt, no event."""
    for taskset in TaskSet.objects.filter(pk__in=pks):
        assert (taskset.state, taskset.attempts, taskset.runs) == (TaskSet.State.QUEUED, 0, 0), taskset.pk
    assert not Attempt.objects.filter(taskset__in=pks).exists()
    assert not Event.objects.filter(taskset__in=pks).exists()
    assert not TaskJob.objects.filter(taskset__in=pks).exists()


def run_to_the_end(job: Job, data_dir, tmp_path) -> None:
    """A launcher started again finishes the job: none bad, none stored twice."""
    Target.objects.filter(pk=job.target_id).update(settings={"duration_ms": 0})
    with open(tmp_path / "again.err", "wb") as stderr:
        again, _ = start_launcher("workers", data_dir, stderr=stderr)
    try:
        wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 90, every=0.2, message="the job ends")
        assert not job.tasksets.exclude(state=TaskSet.State.FINISHED).exists()
        assert job.tasksets.count() == job.total
        assert_finished_once(job.tasksets.all())
        stops_cleanly(again, signal.SIGTERM, tmp_path / "again.err")
    finally:
        stop_leftovers(again)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_workers_started_with_sigint_ignored_drains_on_either_signal(settings, tmp_path, sig):
    """A machine mid-task-set when the signal arrives finishes it; the rest
    stays queued; exit status 0, no traceback, no process left; started
    again, the job ends with none bad and none stored twice."""
    job = job_with_long_tasksets(4000)
    with open(tmp_path / "workers.err", "wb") as stderr:
        workers, _ = start_launcher("workers", settings.DATA_DIR, stderr=stderr, ignore_sigint=True)
    try:
        running = running_tasksets(job)
        stops_cleanly(workers, sig, tmp_path / "workers.err")
        assert_finished_once(TaskSet.objects.filter(pk__in=running))
        assert not job.tasksets.exclude(pk__in=running).exclude(state=TaskSet.State.QUEUED).exists()
        assert not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists()
        assert Host.objects.get().heartbeat_at is None
    finally:
        stop_leftovers(workers)
    run_to_the_end(job, settings.DATA_DIR, tmp_path)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options, again_after", [(("--stop", "kill"), None), (("--grace", "1"), None), ((), 1.0)],
                         ids=["stop-kill", "grace-over", "second-signal"])
def test_a_kill_or_a_drain_past_its_grace_puts_the_tasksets_back_untouched(settings, tmp_path, options, again_after):
    """Task-sets of 60 s: killed at once (``--stop kill``), after a grace of
    1 s, or by a second SIGTERM 1 s into the drain, they go back to the queue
    as if never run, within seconds."""
    job = job_with_long_tasksets(60_000)
    with open(tmp_path / "workers.err", "wb") as stderr:
        workers, _ = start_launcher("workers", settings.DATA_DIR, *options, stderr=stderr)
    try:
        running = running_tasksets(job)
        took = stops_cleanly(workers, signal.SIGTERM, tmp_path / "workers.err", again_after=again_after)
        assert took < 1 + processes.KILL_SECONDS + processes.CLUSTER_STOP_SECONDS
        assert_untouched(running)
        assert not job.tasksets.exclude(state=TaskSet.State.QUEUED).exists()
    finally:
        stop_leftovers(workers)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_clusters_stop_within_seconds_when_their_launcher_is_killed(settings, tmp_path):
    """kill -9 of ``workers`` mid-task-set: its clusters notice (parent-death
    signal) and stop, their machines killed; a launcher started again runs
    alone and finishes the job, none bad, none stored twice."""
    job = job_with_long_tasksets(60_000)
    with open(tmp_path / "workers.err", "wb") as stderr:
        workers, _ = start_launcher("workers", settings.DATA_DIR, stderr=stderr)
    try:
        running = running_tasksets(job)
        family = all_descendants(workers.pid)
        os.kill(workers.pid, signal.SIGKILL)
        workers.wait()
        gone = wait_until(lambda: not descendants_alive(family), 15, every=0.1, message="the orphaned clusters stop")
        print(json.dumps({"orphans_gone_s": round(gone, 2)}))
        assert_untouched(running)
        assert not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists()
    finally:
        stop_leftovers(workers)
        for pid in descendants_alive(family):
            os.kill(pid, signal.SIGKILL)
    run_to_the_end(job, settings.DATA_DIR, tmp_path)



@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cluster_process_killed_takes_every_process_it_forked_with_it(settings):
    """The OOM killer picks a cluster's command: its sentinel, and the
    sentinel's workers, die with it instead of running on unmanaged."""
    from tests.cluster import Cluster

    cluster = Cluster.machines(workers=2).start().wait_ready()
    try:
        wait_until(lambda: len(all_descendants(cluster.process.pid)) >= 5, 30, every=0.2,
                   message="sentinel, monitor, pusher and two workers")
        family = all_descendants(cluster.process.pid)
        os.kill(cluster.process.pid, signal.SIGKILL)
        cluster.process.wait()
        wait_until(lambda: not descendants_alive(family), 10, every=0.1, message="the forked processes die")
    finally:
        cluster.kill9()
