"""Engine throughput: task-sets per second through a real machines cluster
against the ``stdio`` target (settings {"print": false}), which answers at
once, so what is measured is the engine alone, and where its time goes.

    DATA_DIR=/tmp/dist-genode-engine python bench/engine_throughput.py [--machines 1,4,16]
        [--tasksets N (default 300 + 50 per machine)] [--breakdown 300] [--cprofile]

Database: a scratch SQLite file ``DATA_DIR/bench-reconciler.sqlite3`` (deleted
first), or the PostgreSQL database named by ``DATABASE_URL``, created if
missing and EMPTIED (``flush``): give it a scratch name.

Part 1, throughput: one machines cluster (``manage.py hostcluster`` with
Q_CLUSTER_NAME=machines-<host>, 16 workers, started through
tests/cluster.py) runs, for each machine count N, a warm-up job of 3·N
task-sets (machines boot their target and stay idle afterwards), then the
measured job. Its rate is task-sets / (Job.ended_at − Job.started_at): from
the first claim to the last result, launch latency excluded. Also printed:
the CPU the cluster's processes, this process and (on PostgreSQL) the
database's backends used per task-set (/proc), the "CPU ceiling" that
implies for this host's cores if nothing else ran (the development machine
is shared: wall-clock rates move 2-3x with other people's load, CPU per
task-set much less), and the CPU the machines use per second once idle.

Part 2, where the time goes: one MachineWorker runs in this process (no
cluster) over ``--breakdown`` task-sets. Nothing is added to production
code: the functions of the hot path are wrapped here with timers
(``distributor.machine.claim_next``, the session's start/run,
``MachineWorker._execute`` whose own SQL is the event inserts,
``distributor.machine.analyse``, ``TaskSet.finish``, ``MachineWorker._finish``)
and every SQL statement (and commit) of the worker's thread is timed by a
Django ``execute_wrapper`` and charged to the innermost wrapped function;
the time transactions stay open is measured too (on SQLite that is the time
the database's one write lock is held, the serial part of every machine's
work). With
``--cprofile`` the same run is profiled instead and the top functions are
printed (cProfile roughly doubles Python-heavy costs, so the timers are the
figures to quote).

genode_throughput.py reuses this harness against the task-loader peer.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TASKS_PER_SET, JOBS_PER_TASK = 3, 5  # a small task-set: 15 task-jobs, 33 events


# -- set-up -------------------------------------------------------------------------


def setup_django(name: str) -> str:
    """Point Django at a scratch database before it loads; returns a label."""
    os.environ.setdefault("DATA_DIR", "/tmp/distributor-bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    url = os.environ.get("DATABASE_URL", "")
    if url and urlsplit(url).scheme in {"postgres", "postgresql", "pgsql"}:
        _create_pg_database(url)
        label = f"PostgreSQL ({urlsplit(url).path.lstrip('/')})"
    else:
        path = Path(os.environ["DATA_DIR"]).expanduser().resolve() / f"bench-{name}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
        label = f"SQLite ({path})"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    if label.startswith("PostgreSQL"):
        call_command("flush", interactive=False, verbosity=0)
    return label


def _create_pg_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def configure(target_timeout_s: int = 10) -> None:
    """Machines stay idle between a warm-up and the measured job."""
    from distributor.models import DistributorConfig

    config = DistributorConfig.get()
    config.heartbeat_timeout_s, config.idle_timeout_s = 30, 600
    config.target_timeout_s, config.launch_timeout_s = target_timeout_s, 120
    config.halted = False
    config.save()


def bench_file(count: int, name: str = "bench") -> bytes:
    """``count`` variants of one small task-set (3 tasks × 5 jobs, FP)."""
    tasks = [
        {"pkg": "hey", "config": {"arg1": {"range": [0, count]}}, "period": 10, "priority": 1,
         "numberofjobs": JOBS_PER_TASK},
        {"pkg": "pi", "config": {"arg1": 3}, "period": 20, "priority": 2, "numberofjobs": JOBS_PER_TASK},
        {"pkg": "hey", "config": {"arg1": 1}, "period": 0, "priority": 3, "numberofjobs": JOBS_PER_TASK},
    ]
    assert len(tasks) == TASKS_PER_SET
    return json.dumps({"name": name, "tasksets": [{"tasks": tasks}]}).encode()


# -- part 1: a real cluster -------------------------------------------------------------


def start_cluster(workers: int = 16):
    from tests.cluster import Cluster

    cluster = Cluster.machines(workers=workers).start()
    if hasattr(cluster, "wait_ready"):
        cluster.wait_ready(timeout=90)
    return cluster


def stop_machines(timeout: float = 30) -> None:
    from distributor import reconciler
    from distributor.models import Machine

    reconciler.kill_all()
    _wait(lambda: not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists(), timeout, "machines stop")
    reconciler.resume()


def _wait(condition, timeout: float, what: str, tick: bool = True, every: float = 0.05) -> None:
    from distributor.reconciler import tick as reconcile

    deadline = time.monotonic() + timeout
    next_tick = 0.0
    while not condition():
        now = time.monotonic()
        if now > deadline:
            raise SystemExit(f"bench: not within {timeout:g} s: {what}")
        if tick and now >= next_tick:
            reconcile()
            next_tick = now + 0.5
        time.sleep(every)


def process_cpu(pids) -> dict[int, float]:
    """utime + stime (s) of each live process (children that exited are not counted)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cluster_cpu_seconds(cluster) -> float:
    return sum(process_cpu(cluster.pids()).values())


def database_cpu() -> dict[int, float]:
    """CPU of the PostgreSQL backends serving this database (empty on SQLite,
    whose work is done inside the machines' own processes)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return process_cpu([row[0] for row in cursor.fetchall()])


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def measure(target, machines: int, count: int, cluster, submit_options: dict | None = None) -> dict:
    """Warm up ``machines`` machines on ``target``, then time a job of ``count`` task-sets."""
    from distributor import reconciler
    from distributor.models import Job, Machine
    from distributor.queue import submit_job

    reconciler.set_max_machines(machines)
    options = submit_options or {}
    warm = submit_job(bench_file(3 * machines, "warm-up"), target=target, **options)
    _wait(lambda: not Job.objects.get(pk=warm.pk).is_active, 120, f"warm-up job of {machines} machine(s)")
    ready = Machine.objects.filter(target=target, state__in=[Machine.State.IDLE, Machine.State.BUSY])
    _wait(lambda: ready.count() == machines, 60, f"{machines} machines idle")
    done_before = dict(ready.values_list("pk", "tasksets_done"))

    cpu_before, process_before, db_before = cluster_cpu_seconds(cluster), time.process_time(), database_cpu()
    wall = time.monotonic()
    job = submit_job(bench_file(count, f"bench-{machines}"), target=target, **options)
    _wait(lambda: not Job.objects.get(pk=job.pk).is_active, 600, f"the job on {machines} machine(s)", tick=False)
    wall = time.monotonic() - wall
    cpu = cluster_cpu_seconds(cluster) - cpu_before
    process = time.process_time() - process_before
    db_cpu = cpu_since(db_before, database_cpu())
    job.refresh_from_db()
    assert (job.finished_count, job.bad_count) == (count, 0), (job.finished_count, job.bad_count)
    seconds = (job.ended_at - job.started_at).total_seconds()
    per_machine = sorted(m.tasksets_done - done_before.get(m.pk, 0) for m in ready.all())
    idle_cpu = idle_cost(cluster)
    stop_machines()
    return {"machines": machines, "count": count, "seconds": seconds, "wall": wall, "rate": count / seconds,
            "cluster_cpu": cpu, "process_cpu": process, "db_cpu": db_cpu, "per_machine": per_machine, "idle_cpu": idle_cpu}


def total_cpu(result: dict) -> float:
    """Cluster + this process (peers, polling) + PostgreSQL backends."""
    return result["cluster_cpu"] + result["process_cpu"] + result["db_cpu"]


def ceiling(result: dict) -> float:
    """Task-sets/s if every core of this host did nothing else."""
    return (os.cpu_count() or 1) * result["count"] / total_cpu(result)


def idle_cost(cluster, seconds: float = 5.0) -> float:
    """CPU seconds per second the cluster (its machines idle) and its
    database backends use while there is no work: lifelines, idle claims."""
    cpu, db, started = cluster_cpu_seconds(cluster), database_cpu(), time.monotonic()
    time.sleep(seconds)
    used = cluster_cpu_seconds(cluster) - cpu + cpu_since(db, database_cpu())
    return used / (time.monotonic() - started)


def print_rates(results: list[dict], seed: bool = False) -> None:
    seed_rate = 1 / 3.9  # the seed: ~3.9 s per task-set per machine against an instant target
    head = f"{'machines':>8} {'task-sets':>9} {'seconds':>8} {'task-sets/s':>12} {'per machine/s':>14} " \
           f"{'ms/set/machine':>15} {'CPU ms/set':>10} {'CPU ceiling/s':>13}"
    if seed:
        head += f" {'seed /s':>8} {'x seed':>7}"
    print(head)
    for r in results:
        line = (f"{r['machines']:>8} {r['count']:>9} {r['seconds']:>8.2f} {r['rate']:>12.1f} "
                f"{r['rate'] / r['machines']:>14.1f} {1000 * r['machines'] / r['rate']:>15.1f} "
                f"{1000 * total_cpu(r) / r['count']:>10.1f} {ceiling(r):>13.0f}")
        if seed:
            line += f" {seed_rate * r['machines']:>8.2f} {r['rate'] / (seed_rate * r['machines']):>7.0f}"
        print(line)
    print(f"  (CPU ms/set: machines cluster + this process + PostgreSQL backends, per task-set; "
          f"CPU ceiling: {os.cpu_count()} cores / that)")
    base = results[0]
    for r in results[1:]:
        print(f"  {r['machines']} vs {base['machines']} machine(s): x{r['rate'] / base['rate']:.2f} "
              f"(task-sets per machine: {r['per_machine']})")
    for r in results:
        print(f"  {r['machines']} idle machine(s) afterwards: {1000 * r['idle_cpu']:.0f} ms CPU per second "
              f"({1000 * r['idle_cpu'] / r['machines']:.1f} ms/s per machine)")


# -- part 2: where one machine's time goes -------------------------------------------


class Meter:
    """Wall and CPU time per wrapped function, SQL time (statements and
    commits) charged to the innermost one. On a loaded machine wall time
    includes waiting for a core; the CPU column is what the engine costs."""

    def __init__(self):
        self.wall, self.cpu, self.sql, self.queries = Counter(), Counter(), Counter(), Counter()
        self.stack: list[str] = []
        self.thread = threading.get_ident()
        # Transactions (atomic blocks): how many and how long they stay open.
        # On SQLite each holds the database's one write lock all that time.
        self.transactions, self.open_seconds = 0, 0.0
        self._opened: float | None = None

    def wrap(self, name: str, function):
        meter = self

        @functools.wraps(function)
        def timed(*args, **kwargs):
            if threading.get_ident() != meter.thread:
                return function(*args, **kwargs)
            meter.stack.append(name)
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                meter.wall[name] += time.perf_counter() - started
                meter.cpu[name] += time.thread_time() - cpu
                meter.stack.pop()
        return timed

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self._charge(started)

    def _charge(self, started: float) -> None:
        if threading.get_ident() == self.thread:
            phase = self.stack[-1] if self.stack else "outside"
            self.sql[phase] += time.perf_counter() - started
            self.queries[phase] += 1

    def timed_autocommit(self, set_autocommit):
        """Django's atomic turns autocommit off to begin and on after the commit."""
        @functools.wraps(set_autocommit)
        def timed(autocommit, *args, **kwargs):
            if threading.get_ident() == self.thread:
                if not autocommit:
                    self._opened = time.perf_counter()
                elif self._opened is not None:
                    self.transactions += 1
                    self.open_seconds += time.perf_counter() - self._opened
                    self._opened = None
            return set_autocommit(autocommit, *args, **kwargs)
        return timed

    def timed_commit(self, commit):
        @functools.wraps(commit)
        def timed():
            started = time.perf_counter()
            try:
                return commit()
            finally:
                self._charge(started)
        return timed


def breakdown(target, count: int, use_cprofile: bool = False, submit_options: dict | None = None) -> dict:
    """Run one MachineWorker in this process over ``count`` task-sets and time its parts."""
    import cProfile
    import pstats

    from django.db import connection

    from distributor import machine as machine_module
    from distributor.models import DistributorConfig, Machine, TaskSet
    from distributor.queue import submit_job
    from sessions import get_session_class

    config = DistributorConfig.get()
    config.max_machines, config.idle_timeout_s = 1, 0  # the worker returns when the job is done
    config.save()
    # The row first, so that the submission's tick sees the one machine and launches none.
    row = Machine.objects.create(target=target, slot=0, host="bench-in-process", address=target.address_of(0))
    row.take(os.getpid())
    row.refresh_from_db()
    job = submit_job(bench_file(count, "breakdown"), target=target, **(submit_options or {}))

    meter = Meter()
    session_class = get_session_class(target.kind)
    patches = [
        (machine_module, "claim_next", "claim"),
        (session_class, "start", "target"),
        (session_class, "run", "target"),
        (machine_module.MachineWorker, "_execute", "execute"),
        (machine_module, "analyse", "analysis"),
        (TaskSet, "finish", "finish writes"),
        (machine_module.MachineWorker, "_finish", "finish"),
        (machine_module.MachineWorker, "_run", "task-set"),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, label in patches:
        setattr(owner, name, meter.wrap(label, getattr(owner, name)))
    worker = machine_module.MachineWorker(row)
    profile = cProfile.Profile() if use_cprofile else None
    connection.ensure_connection()
    connection._commit = meter.timed_commit(connection._commit)
    connection.set_autocommit = meter.timed_autocommit(connection.set_autocommit)
    try:
        with connection.execute_wrapper(meter):
            started = time.perf_counter()
            if profile:
                profile.enable()
            worker.run()
            if profile:
                profile.disable()
            total = time.perf_counter() - started
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        del connection._commit, connection.set_autocommit
    job.refresh_from_db()
    assert job.finished_count == count, (job.finished_count, job.bad_count)
    if profile:
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(30)
    return {"count": count, "total": total, "meter": meter}


def print_breakdown(result: dict) -> None:
    meter, count = result["meter"], result["count"]
    wall, cpu, sql, queries = meter.wall, meter.cpu, meter.sql, meter.queries

    def ms(seconds: float) -> str:
        return f"{1000 * seconds / count:7.2f}"

    def exclusive(table, name, *children):
        return table[name] - sum(table[child] for child in children)

    rows = [  # (label, wall, cpu, sql, queries)
        ("claim (claim_next)", wall["claim"], cpu["claim"], sql["claim"], queries["claim"]),
        ("target (session start + run)", wall["target"], cpu["target"], sql["target"], queries["target"]),
        ("_execute: event writes, tracker, monitors", exclusive(wall, "execute", "target"),
         exclusive(cpu, "execute", "target"), sql["execute"], queries["execute"]),
        ("analysis labels (analyse)", wall["analysis"], cpu["analysis"], sql["analysis"], queries["analysis"]),
        ("finish writes (TaskSet.finish)", wall["finish writes"], cpu["finish writes"], sql["finish writes"],
         queries["finish writes"]),
        ("rest of _finish (task ids, machine row)", exclusive(wall, "finish", "analysis", "finish writes"),
         exclusive(cpu, "finish", "analysis", "finish writes"), sql["finish"], queries["finish"]),
        ("rest of _run (log line, monitors)", exclusive(wall, "task-set", "execute", "finish"),
         exclusive(cpu, "task-set", "execute", "finish"), sql["task-set"], queries["task-set"]),
    ]
    print(f"{'per task-set':<42} {'wall ms':>8} {'CPU ms':>7} {'SQL ms':>7} {'queries':>7}")
    for label, seconds, on_cpu, in_sql, n in rows:
        print(f"{label:<42} {ms(seconds):>8} {ms(on_cpu)} {ms(in_sql)} {n / count:7.1f}")
    loop_wall, loop_cpu = wall["task-set"] + wall["claim"], cpu["task-set"] + cpu["claim"]
    all_sql = sum(sql.values()) - sql["outside"]
    all_queries = sum(queries.values()) - queries["outside"]
    print(f"{'loop total (claim + task-set)':<42} {ms(loop_wall):>8} {ms(loop_cpu)} {ms(all_sql)} {all_queries / count:7.1f}")
    engine_wall, engine_cpu = loop_wall - wall["target"], loop_cpu - cpu["target"]
    writes = sql["execute"] + sql["finish writes"] + sql["finish"]
    print(f"engine cost per task-set (loop minus target): {1000 * engine_cpu / count:.2f} ms CPU, "
          f"{1000 * engine_wall / count:.2f} ms wall -> one machine alone tops out near "
          f"{count / engine_wall:.0f} task-sets/s here; SQL (statements + commits) "
          f"{100 * all_sql / engine_wall:.0f}% of the wall time: claims {1000 * sql['claim'] / count:.2f} ms, "
          f"writes (events + finish) {1000 * writes / count:.2f} ms")
    from django.db import connection

    held = 1000 * meter.open_seconds / count
    line = f"transactions: {meter.transactions / count:.1f} per task-set, open {held:.2f} ms per task-set (ORM work included)"
    if connection.vendor == "sqlite":
        line += (f"; each holds SQLite's one write lock, so all machines on this database together "
                 f"cannot pass ~{1000 / held:.0f} task-sets/s")
    else:
        line += ("; besides these atomic blocks, each claim and each finish is one statement, a transaction"
                 " of its own; claims lock their machine's row and one task-set (SKIP LOCKED), the job's row once"
                 " per block of variants; finishes lock only their own machine's rows (its tally counts for the job)")
    print(line)


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", default="1,4,16", help="machine counts, comma-separated")
    parser.add_argument("--tasksets", type=int, default=0, help="task-sets per measured job (default 300 + 50·N)")
    parser.add_argument("--breakdown", type=int, default=300, help="task-sets of the in-process run (0: skip)")
    parser.add_argument("--cprofile", action="store_true", help="profile the in-process run with cProfile")
    options = parser.parse_args()
    counts = [int(n) for n in options.machines.split(",") if n.strip()]

    label = setup_django("engine")
    from distributor.models import Target

    configure()
    target = Target.objects.create(name="bench-stdio", kind="stdio", settings={"print": False})
    print(f"engine throughput, stdio target (print off), {label}, {os.cpu_count()} CPUs, "
          f"task-set = {TASKS_PER_SET} tasks x {JOBS_PER_TASK} jobs")
    if options.breakdown:
        result = breakdown(target, options.breakdown, options.cprofile)
        print(f"\none machine in this process, {options.breakdown} task-sets in {result['total']:.2f} s "
              f"({options.breakdown / result['total']:.1f}/s):")
        print_breakdown(result)
        configure()
    if not counts:
        return
    cluster = start_cluster(max(16, max(counts)))
    try:
        results = [measure(target, n, options.tasksets or 300 + 50 * n, cluster) for n in counts]
    finally:
        stop_machines()
        cluster.stop()
    print("\nthrough a real machines cluster (16 workers):")
    print_rates(results)


if __name__ == "__main__":
    main()
