"""Soak: a long job through real machines clusters against faulty task-loader peers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dist_soak [REDIS_URL=redis://127.0.0.1:6379/14] \\
    DATA_DIR=/tmp/dist-soak python bench/soak.py [TASKSETS] [--quick] [--every 30] [--fault-rate 0.02]

Issue 8's soak benchmark. One job of TASKSETS Genode task-sets (default
100,000; ``--quick`` 5,000) runs on two "hosts" on this machine, two machines
clusters (``manage.py hostcluster``) named soak-a and soak-b with four
workers each, eight machines in all, against eight task-loader peers served
by one ``python -m tests.peer`` process at time-scale 0 with faults (hang,
drop, garbage, EXIT_ERROR) at ``--fault-rate``. Two hosts rather than one of
eight workers: that is the production shape (a queue per host, host
heartbeats, placement across hosts, Redis when REDIS_URL is set), so a leak
on that path shows here too, for the price of one more cluster parent.

It prints throughput every ``--every`` seconds (finished, bad, the rate of
the interval and overall), the resident memory (VmRSS) of every process after
the warm-up (the first 5% of the job) and at the end with the growth in per
cent (target < 10% for the clusters' processes; the peer keeps a record of
every task-set it ran, by design, so it grows with the job), and the count of
lost or duplicated results (target 0). It exits 1 if any result is lost or
duplicated, or if the job stalls.

DATABASE_URL must name a PostgreSQL scratch database whose name contains
"soak": it is dropped and created again, then migrated. With REDIS_URL the
clusters use the Redis broker (only the two hosts' queue keys are deleted
beforehand), else the ORM broker.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOSTS = ("soak-a", "soak-b")
WORKERS = 4
PEERS = len(HOSTS) * WORKERS
FAULT_KINDS = "hang,drop,garbage,exit_error"
TICK_EVERY_S = 5.0  # the minute schedule, played faster (machines tick too)
STALL_S = 300.0  # no task-set ended for this long: the job is stuck


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasksets", type=int, nargs="?", default=100_000, help="task-sets in the job (even)")
    parser.add_argument("--quick", action="store_true", help="5,000 task-sets")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between throughput lines")
    parser.add_argument("--fault-rate", type=float, default=0.02, help="probability of a fault per task-set run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    total = 5_000 if args.quick else args.tasksets
    if total < 100 or total % 2:
        parser.error("TASKSETS must be even and at least 100")
    setup(os.environ.get("DATABASE_URL", ""))
    return Soak(total, args).run()


# -- set-up -----------------------------------------------------------------------


def setup(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in {"postgres", "postgresql", "pgsql"} or "soak" not in name:
        sys.exit("DATABASE_URL must name a PostgreSQL scratch database whose name contains 'soak' "
                 "(it is dropped and created again), e.g. postgres://postgres@127.0.0.1:5432/dist_soak")
    import psycopg

    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.execute(f'CREATE DATABASE "{name}"')
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DATA_DIR", "/tmp/dist-soak")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def job_file(count: int) -> bytes:
    """``count`` variants: hey's arg1 times pi's period, two jobs per task."""
    return json.dumps({"name": "soak", "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, count // 2]}}, "period": 10, "priority": 1, "numberofjobs": 2},
        {"pkg": "pi", "config": {"arg1": 3}, "period": [0, 7], "priority": 2, "numberofjobs": 2},
    ]}]}).encode()


def upload_binaries() -> None:
    from django.core.files.base import ContentFile

    from distributor.models import Binary

    for name, data in {"hey": b"\x7fELF hey " * 40, "pi": b"\x7fELF pi " * 200}.items():
        Binary.store(name, ContentFile(data))


def clear_queues() -> None:
    """Launch messages of an earlier run would name machine ids of this one."""
    from django.conf import settings

    if settings.REDIS_URL:
        import redis

        client = redis.from_url(settings.REDIS_URL)
        client.delete(*[f"django_q:machines-{host}:q" for host in HOSTS])
        client.close()


class PeerProcess:
    """``python -m tests.peer`` in a process of its own: its CPU and memory
    are not the benchmark's."""

    def __init__(self, count: int, fault_rate: float, seed: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.peer", "--count", str(count), "--port", "0", "--time-scale", "0",
             "--fault-rate", str(fault_rate), "--faults", FAULT_KINDS, "--seed", str(seed)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        self.addresses = [self.process.stdout.readline().strip() for _ in range(count)]
        if not all(self.addresses):
            raise SystemExit(f"the peer process did not start: {self.addresses}")

    def stop(self) -> str:
        """SIGTERM; returns its summary (task-sets, faults, protocol errors per peer)."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return out


def short_summary(text: str) -> list[str]:
    """The peer's summary lines with their list of faults counted by kind."""
    lines = []
    for line in text.splitlines():
        head, found, tail = line.partition("faults [")
        if found:
            faults, _, rest = tail.partition("]")
            counts = Counter(kind.strip(" '") for kind in faults.split(",") if kind.strip())
            line = f"{head}faults {dict(counts)}{rest}"
        lines.append(line)
    return lines


# -- memory ------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def processes(clusters, peer: PeerProcess) -> dict[int, str]:
    """pid -> role of every process that matters: each cluster's parent
    (hostcluster) and sentinel, its workers (those running a machine named by
    Machine.pid), its other django-q2 processes (pusher, monitor, a worker
    without a machine), the peer and this process (it ticks and watches)."""
    from distributor.models import Machine

    machines = dict(Machine.objects.filter(state__in=Machine.LIVE_STATES).values_list("pid", "pk"))
    roles = {os.getpid(): "bench (ticks)", peer.process.pid: "peer (python -m tests.peer)"}
    for cluster in clusters:
        leader = cluster.process.pid
        for pid in cluster.pids():
            if pid == leader:
                role = "parent (hostcluster)"
            elif parent_of(pid) == leader:
                role = "sentinel"
            elif pid in machines:
                role = f"worker (machine {machines[pid]})"
            else:
                role = "pusher/monitor/idle worker"
            roles[pid] = f"{cluster.host} {role}"
    return roles


def clusters_rss(clusters) -> int:
    """KiB resident in every process of the clusters: the trend between the
    start and end figures."""
    return sum(rss_kib(pid) or 0 for cluster in clusters for pid in cluster.pids())


def snapshot(roles: dict[int, str]) -> dict[int, tuple[str, int | None]]:
    return {pid: (role, rss_kib(pid)) for pid, role in roles.items()}


def memory_report(start: dict, end: dict) -> bool:
    """Prints start/end RSS per process; True if the clusters' processes grew < 10%."""
    print("\nresident memory (VmRSS), after the warm-up and at the end:")
    print(f"  {'pid':>7}  {'process':<40} {'start MiB':>10} {'end MiB':>10} {'growth':>8}")
    ok = True
    sums = Counter()
    for pid, (role, before) in sorted(start.items(), key=lambda item: item[1][0]):
        after = end.get(pid, (role, None))[1]
        if before is None or after is None:
            print(f"  {pid:>7}  {role:<40} {_mib(before):>10} {_mib(after):>10} {'gone':>8}")
            continue
        growth = 100.0 * (after - before) / before
        print(f"  {pid:>7}  {role:<40} {before / 1024:>10.1f} {after / 1024:>10.1f} {growth:>+7.1f}%")
        if role.startswith(("soak-", "bench")):
            sums["before"] += before
            sums["after"] += after
            ok = ok and growth < 10.0
    for pid, (role, after) in end.items():
        if pid not in start:
            print(f"  {pid:>7}  {role:<40} {'-':>10} {_mib(after):>10} {'new':>8}")
    if sums["before"]:
        growth = 100.0 * (sums["after"] - sums["before"]) / sums["before"]
        print(f"  {'':>7}  {'clusters + bench, total':<40} {sums['before'] / 1024:>10.1f} "
              f"{sums['after'] / 1024:>10.1f} {growth:>+7.1f}%")
    print(f"  memory target (< 10% per cluster process): {'met' if ok else 'MISSED'}")
    return ok


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


# -- integrity ---------------------------------------------------------------------


def integrity(job) -> dict[str, int]:
    """Lost and duplicated results, each of which must be 0."""
    from django.db.models import Count, Q, Sum

    from distributor.models import Attempt, Task, TaskJob, TaskSet

    job.refresh_from_db()
    rows = job.tasksets
    states = Counter(dict(rows.values_list("state").annotate(n=Count("pk")).order_by()))
    expected = dict(Task.objects.filter(taskset__job=job).values_list("taskset").annotate(n=Sum("numberofjobs")).order_by())
    stored = dict(TaskJob.objects.filter(taskset__job=job).values_list("taskset").annotate(n=Count("pk")).order_by())
    finished = set(rows.filter(state=TaskSet.State.FINISHED).values_list("pk", flat=True))
    results = Counter(dict(Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FINISHED)
                           .values_list("taskset").annotate(n=Count("pk")).order_by()))
    return {
        "variants never started (no row)": job.total - rows.count(),
        "task-sets left queued or running": states[TaskSet.State.QUEUED] + states[TaskSet.State.RUNNING],
        "finished task-sets without their task-jobs": sum(1 for pk in finished if stored.get(pk, 0) < expected[pk]),
        "task-sets with more than one set of task-jobs": sum(1 for pk, n in stored.items() if n > expected[pk]),
        "task-jobs of task-sets that are not finished": sum(n for pk, n in stored.items() if pk not in finished),
        "finished task-sets without exactly one finished attempt": sum(1 for pk in finished if results[pk] != 1),
        "bad task-sets with an outcome": rows.filter(state=TaskSet.State.BAD).exclude(outcome="").count(),
        "finished counter minus finished rows": abs(job.finished_count - states[TaskSet.State.FINISHED]),
        "bad counter minus bad rows": abs(job.bad_count - states[TaskSet.State.BAD]),
        "job not finished": int(job.state != job.State.FINISHED),
        "open attempts": Attempt.objects.filter(taskset__job=job).filter(Q(ended_at__isnull=True)).count(),
    }


# -- the run -----------------------------------------------------------------------


class Soak:
    def __init__(self, total: int, args):
        self.total, self.args = total, args
        self.warmup = max(200, total // 20)

    def run(self) -> int:
        from django.conf import settings

        from distributor import reconciler
        from distributor.models import DistributorConfig, Target
        from distributor.queue import submit_job
        from tests.cluster import Cluster

        broker = f"Redis {settings.REDIS_URL}" if settings.REDIS_URL else "ORM broker"
        print(f"soak: {self.total:,} task-sets, {len(HOSTS)} hosts x {WORKERS} workers, {PEERS} peers, "
              f"faults {FAULT_KINDS} at {self.args.fault_rate:.1%}, PostgreSQL {settings.DATABASES['default']['NAME']}, "
              f"{broker}, DATA_DIR {settings.DATA_DIR}", flush=True)
        clear_queues()
        upload_binaries()
        config = DistributorConfig.get()
        config.target_timeout_s = 2  # a hang costs its machine 2 s
        config.idle_timeout_s = 10
        config.save()
        env = {"REDIS_URL": settings.REDIS_URL or ""}
        peer = PeerProcess(PEERS, self.args.fault_rate, self.args.seed)
        clusters = [Cluster.machines(host=host, workers=WORKERS, extra_env=env) for host in HOSTS]
        code = 1
        try:
            for cluster in clusters:
                cluster.start()
            for cluster in clusters:
                cluster.wait_ready(120)
            target = Target.objects.create(name="soak", kind="genode", addresses=peer.addresses,
                                           settings={"connect_timeout": 5.0, "startup_timeout": 30.0})
            reconciler.set_max_machines(PEERS)
            job = submit_job(job_file(self.total), target=target, tries=3)
            start_rss, end_rss, elapsed = self.watch(job, clusters, peer)
            reconciler.kill_all()
            code = self.report(job, start_rss, end_rss, elapsed)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave clusters behind
            try:
                reconciler.kill_all()  # machines run until told: stop them so that the clusters can exit
            except Exception as error:  # noqa: BLE001 - clean up whatever happened
                print(f"kill all failed: {error}", file=sys.stderr)
            for cluster in clusters:
                cluster.stop()
            print("\npeer process:\n" + "\n".join(f"  {line}" for line in short_summary(peer.stop())))
        return code

    def watch(self, job, clusters, peer: PeerProcess) -> tuple[dict, dict, float]:
        from distributor import reconciler
        from distributor.models import Job

        started = last_line = last_tick = last_change = time.monotonic()
        last_done, start_rss = 0, None
        print(f"\n{'time':>7} {'finished':>9} {'bad':>5} {'rate/s':>7} {'overall/s':>9} {'clusters MiB':>12}", flush=True)
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            row = Job.objects.filter(pk=job.pk).values("finished_count", "bad_count", "state").get()
            done = row["finished_count"] + row["bad_count"]
            ended = row["state"] not in Job.ACTIVE_STATES
            if done != last_done:
                last_change = now
            if start_rss is None and done >= self.warmup:
                start_rss = snapshot(processes(clusters, peer))
                print(f"        (warm-up over at {done:,} task-sets: memory taken)", flush=True)
            if now - last_line >= self.args.every or ended:
                rate = (done - last_done) / (now - last_line)
                print(f"{now - started:>6.0f}s {row['finished_count']:>9,} {row['bad_count']:>5,} {rate:>7.1f} "
                      f"{done / (now - started):>9.1f} {clusters_rss(clusters) / 1024:>12.1f}", flush=True)
                last_line, last_done = now, done
            if ended:
                end_rss = snapshot(processes(clusters, peer))
                return start_rss or end_rss, end_rss, now - started
            if now - last_change > STALL_S:
                raise SystemExit(f"stalled: no task-set ended for {STALL_S:.0f} s at {done:,} of {self.total:,}")
            if now - last_tick >= TICK_EVERY_S:
                reconciler.tick()
                last_tick = now

    def report(self, job, start_rss: dict, end_rss: dict, elapsed: float) -> int:
        from distributor.models import Attempt, Machine

        job.refresh_from_db()
        print(f"\n{self.total:,} task-sets in {elapsed:,.0f} s: {job.total / elapsed:.1f} task-sets/s; "
              f"{job.finished_count:,} finished, {job.bad_count:,} bad")
        failed = Counter(Attempt.objects.filter(taskset__job=job).values_list("result", flat=True))
        print(f"attempts: {dict(failed)}; machines: "
              f"{dict(Counter(Machine.objects.values_list('state', flat=True)))}")
        memory_report(start_rss, end_rss)
        problems = integrity(job)
        print("\nlost or duplicated results (target 0):")
        for name, count in problems.items():
            print(f"  {count:>6}  {name}")
        lost = sum(problems.values())
        print(f"  total: {lost}")
        return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
