"""Chaos: two hosts, a faulty farm of targets and SIGKILLs; nothing lost, nothing twice.

Issue 8's chaos test. Two machines clusters with different host names
(``chaos-a`` and ``chaos-b``, three workers each, each with its own data
folder: the binaries reach them through the database) run one job against six
task-loader peers (tests/peer) that hang, drop the connection, send garbage
or report EXIT_ERROR on a few per cent of their runs. While the job runs,
host A is killed with SIGKILL (its whole process group: a host crash) and
started again later, and worker processes of host B are SIGKILLed in the
middle of their task-sets. At the end the database must hold every task-set
once, finished or bad, and every finished task-set's task-jobs must be
exactly what a peer sent on that task-set's one successful run.

The broker: on PostgreSQL the clusters use Redis (``CHAOS_REDIS_URL``,
default db 15 on 127.0.0.1, flushed before and after), as several hosts
would in production; on SQLite they use the ORM broker. The test process
must use the same broker, since its ``tick()`` sends launch messages too
(so do the hosts' own reconcilers: the test watches the broker itself to
see both hosts' launches arrive, by MONITOR on Redis and by a trigger on
the ORM broker's table).
django-q2 1.11 copies ``settings.Q_CLUSTER`` into the class attributes of
``django_q.conf.Conf`` once, at import, and ``get_broker()`` reads those
attributes on every ``async_task``; overriding settings (pytest-django's
``settings`` fixture) therefore changes nothing, while patching ``Conf.ORM``
and ``Conf.REDIS`` does, for this test only.

Size: ``CHAOS_TASKSETS`` task-sets (even), default 2,000, or 600 when
``CI=true`` so that CI's run stays within a few minutes on two busy cores
(the chaos needs some 20 s of work left after the host crash, which 300
task-sets do not give on an idle machine).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from unittest import mock

import pytest
import redis
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from distributor import reconciler
from distributor.hosts import beat
from distributor.models import Attempt, Event, Host, Job, Machine, Target, TaskJob, TaskSet
from distributor.queue import claim_next, submit_job
from distributor.taskfile import taskset_xml
from tests.cluster import (Cluster, clusters_broker, kill_machines_and_stop, short_timeouts, store_binaries, stored_taskjobs,
                           wait_until)
from tests.peer import TaskLoaderPeer, peer_taskjobs

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TASKSETS = int(os.environ.get("CHAOS_TASKSETS") or (600 if CI else 2000))
HOSTS = ("chaos-a", "chaos-b")
WORKERS = 3
PEERS = 6
FAULT_RATE = 0.04
FAULT_KINDS = ("hang", "drop", "garbage", "exit_error")
SEED = 8
TRIES = 3
BINARIES = {"hey": b"\x7fELF hey " * 40, "pi": b"\x7fELF pi " * 200}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


# -- the job and the farm ---------------------------------------------------------


def job_file(count: int) -> bytes:
    """``count`` variants, each with a description of its own (hey's arg1
    times pi's period), so a peer's record names its task-set."""
    assert count % 2 == 0 and count >= 100, "CHAOS_TASKSETS must be even and at least 100"
    return json.dumps({"name": "chaos", "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, count // 2]}}, "period": 10, "priority": 1, "numberofjobs": 2},
        {"pkg": "pi", "config": {"arg1": 3}, "period": [0, 7], "priority": 2, "numberofjobs": 2},
    ]}]}).encode()


def exec_time(task: dict, number: int) -> int:
    """Some hey jobs overrun their 10 ms period: unschedulable results too."""
    return (task["arg1"] + number) % 13 if task["pkg"] == "hey" else 3


def doomed(tasks: list[dict]) -> bool:
    """One task-set in fifty fails on every target, every time."""
    return tasks[0]["arg1"] % 50 == 17


class ChaosPeer(TaskLoaderPeer):
    """A peer that, besides its random faults, reports EXIT_ERROR on every run
    of a doomed task-set: the target fails it each of its tries, so it must
    end bad, never with an outcome. (``_events_for`` is where the peer applies
    the faults that live in the event stream.)"""

    def _events_for(self, record):
        if record.tasks and doomed(record.tasks):
            record.fault = "exit_error"
        return super()._events_for(record)


@contextmanager
def peer_farm(count: int):
    with ExitStack() as stack:
        peers = [stack.enter_context(ChaosPeer(f"127.0.0.{2 + i}", time_scale=0, exec_time=exec_time,
                                               fault_rate=FAULT_RATE, fault_kinds=FAULT_KINDS, seed=SEED + i))
                 for i in range(count)]
        yield peers


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def broker(monkeypatch):
    """The clusters' broker, also used by this process (see the module
    docstring); ``launches()`` lists the queue of every launch message that
    reached the broker, whichever process sent it (this one's ticks or a
    host's own reconciler), as the broker itself saw it."""
    url = os.environ.get("CHAOS_REDIS_URL", DEFAULT_REDIS_URL)
    with clusters_broker(monkeypatch, url) as client:
        if client is None:
            with orm_launches() as launches:
                yield {"REDIS_URL": ""}, launches  # an empty REDIS_URL is the ORM broker
        else:
            with redis_launches(url) as launches:
                yield {"REDIS_URL": url}, launches


@contextmanager
def redis_launches(url: str):
    """Yields a function listing every RPUSH (django-q2's enqueue) into
    ``url``'s database from any client, as Redis's MONITOR reports them."""
    # A client of its own with no socket timeout (redis-py's default is 5 s):
    # a quiet spell of the clusters must not end the MONITOR.
    client = redis.from_url(url, socket_timeout=None)
    pushed: list[str] = []
    database = client.connection_pool.connection_kwargs.get("db", 0)
    stopped = threading.Event()

    def listen(monitor) -> None:
        for command in monitor.listen():
            if stopped.is_set():
                return
            words = command["command"].split(" ", 2)
            if command["db"] == database and words[0].upper() == "RPUSH":
                pushed.append(words[1])

    with client.monitor() as monitor:
        thread = threading.Thread(target=listen, args=(monitor,), name="redis-monitor", daemon=True)
        thread.start()
        try:
            yield lambda: list(pushed)
        finally:
            stopped.set()
            client.ping()  # a command the monitor sees: it wakes up and returns
            thread.join(timeout=5)
    client.close()


@contextmanager
def orm_launches():
    """Yields a function listing every message queued in django-q2's ORM
    broker table from any process: a trigger copies each one's queue name
    into a table of the test's own."""
    from django_q.models import OrmQ

    queue = connection.ops.quote_name(OrmQ._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE chaos_launches (key TEXT NOT NULL)")
        cursor.execute(f"CREATE TRIGGER chaos_launch AFTER INSERT ON {queue}"
                       " BEGIN INSERT INTO chaos_launches (key) VALUES (NEW.key); END")

    def queued() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT key FROM chaos_launches")
            return [row[0] for row in cursor.fetchall()]

    try:
        yield queued
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS chaos_launch")
            cursor.execute("DROP TABLE IF EXISTS chaos_launches")


@pytest.fixture
def configured(transactional_db):
    return short_timeouts(launch_timeout_s=30, target_timeout_s=2)  # a hang costs 2 s


@pytest.fixture
def binaries(transactional_db):
    """Stored in the database, where both hosts fetch them into their own caches."""
    yield from store_binaries(BINARIES)


@pytest.fixture
def hosts(configured, binaries, broker, tmp_path):
    """Two machines clusters, each with a data folder of its own (two hosts
    have two disks); every process they ever start carries a marker."""
    marker = uuid.uuid4().hex
    broker_env, launches = broker
    env = {**broker_env, "CHAOS_RUN": marker}
    clusters = {name: Cluster.machines(host=name, workers=WORKERS, extra_env=env, data_dir=tmp_path / name)
                for name in HOSTS}
    try:
        yield clusters, marker, launches
    finally:
        kill_machines_and_stop(*clusters.values())


# -- what the peers sent ----------------------------------------------------------------


def runs_by_description(peers: list[ChaosPeer]) -> dict[str, list[tuple[str, object]]]:
    """description -> [(peer address, record)] of every START, in each peer's order."""
    runs = defaultdict(list)
    for peer in peers:
        with peer.lock:
            records = list(peer.tasksets)
        for record in records:
            runs[record.descs_xml].append((peer.address, record))
    return runs


def final_clean_run(runs: list[tuple], address: str):
    """The successful attempt's run: the last complete run without a fault on
    the peer the finishing machine talked to (no run can follow it: the
    task-set is never claimed again)."""
    on_peer = [record for peer_address, record in runs if peer_address == address]
    assert on_peer, f"no run on {address}"
    last = on_peer[-1]
    assert (last.fault, last.state) == (None, "done"), (address, last.fault, last.state)
    return last


# -- chaos ------------------------------------------------------------------------------


def done(job: Job) -> int:
    row = Job.objects.filter(pk=job.pk).values("finished_count", "bad_count").get()
    return row["finished_count"] + row["bad_count"]


def wait_for_progress(job: Job, fraction: float, step: str, timeout: float = 300) -> None:
    """Until ``fraction`` of the job ended; the job must still have work left,
    or the chaos step would hit an idle system (raise CHAOS_TASKSETS)."""
    wanted = int(job.total * fraction)
    wait_until(lambda: done(job) >= wanted, timeout, tick=True, message=f"{wanted} task-sets ended before {step}")
    assert done(job) < job.total, f"the job ended before {step}: too few task-sets for the chaos"


def busy_worker(cluster: Cluster, rng: random.Random) -> tuple[int, int]:
    """(pid, machine id) of a worker process of ``cluster`` in the middle of a
    task-set; never the group leader (the cluster's own process)."""
    candidates = []

    def found() -> bool:
        pids = set(cluster.pids()) - {cluster.process.pid}
        rows = Machine.objects.filter(host=cluster.host, state=Machine.State.BUSY, pid__in=pids)
        candidates[:] = sorted(rows.values_list("pid", "pk"))
        return bool(candidates)

    wait_until(found, 30, tick=True, message=f"a busy worker on {cluster.host}")
    return rng.choice(candidates)


def kill_worker(cluster: Cluster, rng: random.Random) -> int:
    """SIGKILL a busy worker; its machine is declared dead later (checked at the end)."""
    pid, machine_id = busy_worker(cluster, rng)
    os.kill(pid, signal.SIGKILL)
    return machine_id


def restart(cluster: Cluster) -> None:
    cluster.start()
    fresh = timezone.now() - timedelta(seconds=2)
    wait_until(lambda: host_beats(cluster.host, cluster.process.pid, fresh), 60, tick=True,
               message=f"host {cluster.host} beats again")


def host_beats(name: str, pid: int, since) -> bool:
    return Host.objects.filter(name=name, pid=pid, heartbeat_at__gte=since).exists()


def processes_with(marker: str) -> list[int]:
    """Every process (of any cluster, old or new) started with this run's marker."""
    needle = f"CHAOS_RUN={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours
    return found


# -- the test ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_hosts_crashes_and_faulty_targets_lose_and_duplicate_nothing(hosts):
    clusters, marker, launches = hosts
    host_a, host_b = clusters["chaos-a"], clusters["chaos-b"]
    rng = random.Random(SEED)
    with peer_farm(PEERS) as peers:
        target = Target.objects.create(name="chaos", kind="genode", addresses=[p.address for p in peers],
                                       # Random faults, not a broken board: quarantine (its own tests,
                                       # test_slot_health*) would drain slots mid-test and leave a host
                                       # with no busy worker to kill.
                                       settings={"connect_timeout": 5.0, "startup_timeout": 20.0,
                                                 "quarantine_after": 1000})
        host_a.start()
        host_b.start()
        host_a.wait_ready(60)
        host_b.wait_ready(60)
        reconciler.set_max_machines(PEERS)
        job = submit_job(job_file(TASKSETS), target=target, tries=TRIES)
        started = time.monotonic()
        for peer, kind in zip(peers, FAULT_KINDS):
            peer.inject(kind)  # each kind at least once, whatever the random draws

        wait_for_progress(job, 0.05, "the first worker kill")
        killed_workers = [kill_worker(host_b, rng)]

        wait_for_progress(job, 0.10, "the host crash")
        on_a = set(Machine.objects.filter(host="chaos-a", state__in=Machine.LIVE_STATES).values_list("pk", flat=True))
        assert on_a, "host A ran machines before its crash"
        host_a.kill9()
        crashed_at = timezone.now()
        killed_workers.append(kill_worker(host_b, rng))  # while host B carries the job alone
        wait_until(lambda: not Machine.objects.filter(pk__in=on_a, state__in=Machine.LIVE_STATES).exists(), 30,
                   tick=True, message="host A's machines are declared dead")
        assert done(job) < job.total, "the job ended while host A was down"

        restart(host_a)
        restarted_at = timezone.now()
        wait_for_progress(job, 0.60, "the third worker kill")
        killed_workers.append(kill_worker(host_b, rng))

        wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 600, tick=True, message="the job ends")
        elapsed = time.monotonic() - started
        kill_machines_and_stop(*clusters.values())
        runs = runs_by_description(peers)

    job.refresh_from_db()
    tasksets = job.tasksets.all()

    # Every variant once, finished or bad, and the counters are the rows.
    assert job.state == Job.State.FINISHED
    assert job.finished_count + job.bad_count == job.total == TASKSETS
    assert sorted(tasksets.values_list("variant", flat=True)) == list(range(TASKSETS))
    states = Counter(tasksets.values_list("state", flat=True))
    assert states == {TaskSet.State.FINISHED: job.finished_count, TaskSet.State.BAD: job.bad_count}, states

    # One result per finished task-set, none for a bad one.
    finished = tasksets.filter(state=TaskSet.State.FINISHED)
    results = Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FINISHED)
    assert results.count() == job.finished_count
    assert set(results.values_list("taskset", flat=True)) == set(finished.values_list("pk", flat=True))
    assert not Attempt.objects.filter(taskset__job=job, ended_at__isnull=True).exists(), "an attempt left open"
    with_rows = TaskJob.objects.filter(taskset__job=job).values("taskset").annotate(n=Count("pk"))
    assert {row["taskset"] for row in with_rows} == set(finished.values_list("pk", flat=True))
    assert {row["n"] for row in with_rows} == {4}, "two jobs of two tasks, stored once"

    # Bad is never a result, and every doomed task-set is bad after its tries.
    bad = tasksets.filter(state=TaskSet.State.BAD)
    assert not bad.exclude(outcome="").exists(), "a bad task-set has an outcome"
    doomed_variants = {v for v in range(TASKSETS) if doomed([{"arg1": v // 2}])}  # hey's arg1 is v // 2
    assert doomed_variants <= set(bad.values_list("variant", flat=True))
    for taskset in bad:
        attempts = list(Attempt.objects.filter(taskset=taskset))
        failed = [a for a in attempts if a.result == Attempt.Result.FAILED]
        lost = [a for a in attempts if a.result == Attempt.Result.LOST]
        assert len(failed) == TRIES or len(lost) == TRIES, (taskset, [(a.result, a.error) for a in attempts])
        if taskset.variant in doomed_variants and len(failed) == TRIES:
            assert all("EXIT_ERROR" in a.error for a in failed), [a.error for a in failed]

    # The database holds exactly what a peer sent on the one successful run.
    lost = set(Attempt.objects.filter(taskset__job=job, result=Attempt.Result.LOST).values_list("taskset", flat=True))
    for taskset in finished.select_related("machine").prefetch_related("tasks"):
        description = taskset_xml([task.as_dict() for task in taskset.tasks.all()])
        record = final_clean_run(runs[description], taskset.machine.address)
        assert stored_taskjobs(taskset) == peer_taskjobs(record.events), taskset
        all_exit = all(kind == "EXIT" for *_, kind in peer_taskjobs(record.events))
        assert taskset.outcome == (TaskSet.Outcome.SCHEDULABLE if all_exit else TaskSet.Outcome.UNSCHEDULABLE)
        assert results.get(taskset=taskset).machine_id == taskset.machine_id
        # The last run's raw events too, even after a lost run (see the test below).
        assert stored_events(taskset) == record.events, taskset
    assert {TaskSet.Outcome.SCHEDULABLE, TaskSet.Outcome.UNSCHEDULABLE} <= set(finished.values_list("outcome", flat=True))

    # The chaos happened: faults of every kind, machines lost on both hosts,
    # host A back at work after its restart, launches through the broker.
    struck = Counter(record.fault for records in runs.values() for _, record in records if record.fault)
    assert set(FAULT_KINDS) <= set(struck), struck
    dead = Machine.objects.filter(target=target, state=Machine.State.DEAD)
    assert on_a <= set(dead.values_list("pk", flat=True))
    assert set(killed_workers) <= set(dead.values_list("pk", flat=True))
    assert lost, "no task-set was lost with its machine"
    assert results.filter(machine__host="chaos-a", ended_at__gt=restarted_at).exists(), "host A worked after its restart"
    assert results.filter(machine__host="chaos-b", ended_at__range=(crashed_at, restarted_at)).exists()
    for cluster in clusters.values():  # each host fetched the binaries into its own folder
        for name, data in BINARIES.items():
            assert (cluster.data_dir / "cache" / hashlib.sha256(data).hexdigest()).read_bytes() == data, cluster.host
    queues = {f"django_q:machines-{host}:q" if connection.vendor == "postgresql" else f"machines-{host}" for host in HOSTS}
    assert queues <= set(launches()), Counter(launches())

    # Nothing left running, of any cluster ever started.
    wait_until(lambda: not processes_with(marker), 15, message="every cluster process exits")
    print(f"\nchaos: {TASKSETS} task-sets in {elapsed:.1f} s ({TASKSETS / elapsed:.1f}/s): "
          f"{job.finished_count} finished, {job.bad_count} bad; faults {dict(struck)}; "
          f"{dead.count()} machines declared dead; {len(lost)} task-sets lost a run")


def stored_events(taskset: TaskSet) -> list[tuple]:
    """The raw events stored for the task-set's last run, in order."""
    return list(Event.objects.filter(taskset=taskset, attempt=taskset.runs).order_by("seq", "pk")
                .values_list("task_id", "type", "time_ms"))


# -- found by the chaos test (fixed in 4bbd6a3: runs number every start) ---------------


@pytest.mark.django_db(transaction=True)
def test_a_lost_attempts_events_are_not_mixed_into_its_retry():
    """A machine dies after storing one message of events; the task-set is
    retried and finishes. The events stored under its last attempt must be
    those of the run that finished, as the task-set page shows them."""
    beat()  # this host is a live machines cluster
    target = Target.objects.create(name="scripted", kind="scripted")
    one_task = json.dumps({"tasksets": [{"tasks": [{"pkg": "hey", "period": 10, "numberofjobs": 2}]}]})
    with mock.patch("distributor.reconciler.async_task"):
        submit_job(one_task, target=target)
        first = Machine.objects.get()
        first.take(pid=1)
        taskset = claim_next(first).taskset
        store_events(taskset, [(0, "START", 0)])  # then its worker is SIGKILLed
        Machine.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        assert reconciler.tick()["dead"] == [first.pk]

        second = Machine.objects.get(state=Machine.State.LAUNCHING)
        second.take(pid=2)
        taskset = claim_next(second).taskset
    run = [(0, "START", 0), (0, "EXIT", 2), (0, "START", 10), (0, "EXIT", 12), (0, "JOBS_DONE", 12)]
    store_events(taskset, run)

    assert Attempt.objects.filter(taskset=taskset, result=Attempt.Result.LOST).count() == 1
    assert stored_events(taskset) == run
    lost_run = Event.objects.filter(taskset=taskset).exclude(attempt=taskset.runs)
    assert list(lost_run.values_list("task_id", "type", "time_ms")) == [(0, "START", 0)], "kept as evidence"


def store_events(taskset: TaskSet, events: list[tuple]) -> None:
    """What MachineWorker._execute stores for one message."""
    Event.objects.bulk_create([Event(taskset=taskset, attempt=taskset.runs, seq=seq, task_id=task_id, type=kind,
                                     time_ms=at) for seq, (task_id, kind, at) in enumerate(events)])
