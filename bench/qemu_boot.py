"""Boot-to-ready seconds of QEMU test guests, beside the seeds' fixed 20 s,
and task-sets per minute on 1 and 2 QEMU machines.

    sudo python bench/qemu_boot.py [--guests 2] [--boots 2] [--tasksets-seconds 30] [--engine-seconds 60]

Runs in a network namespace of its own (bridge, dnsmasq, one tap per guest),
boots the ARM test guest (tests/guest/build.sh, cached) on every slot at
once, ``--boots`` times, and prints for each boot the seconds from QEMU's
start to the guest answering AVAILABLE — the moment a machine takes work;
the seeds slept a fixed 20 s instead. With ``--tasksets-seconds`` it then
runs the smallest task-set (one ``hey`` job) back to back on 1 and on all
guests and prints task-sets per minute per guest and in all, through the
session alone (no database, no engine): the ceiling the target side allows.

With ``--engine-seconds`` it then does the same through the real engine: a
machines cluster (``manage.py hostcluster``, as ``serve`` starts it) with
the namespace in its environment, a qemu pool, a job of such task-sets, and
the reconciler launching 1, then all, machines; the rate is counted from the
moment every machine's guest is ready, so boots are not in it, while
claiming, storing every event and task-job and the heartbeats are. The seeds
managed about 15 task-sets a minute per machine against an instant target.
The engine keeps its rows in a fresh SQLite file in the bench's folder, or
in the database BENCH_DATABASE_URL names (it must exist; it is migrated).

Each guest lives in one thread from boot to stop: its QEMU is tied to the
thread that started it (PR_SET_PDEATHSIG), as in a machine worker.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# The guest's build cache stays where the tests keep it ($DATA_DIR/guest) ...
GUEST_CACHE = os.environ.get("GUEST_CACHE") or str(
    Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / "data") / "guest")
# ... and everything else the bench makes (consoles, dnsmasq's files, the
# engine's database, logs, uploads and secret key, shared with the machines
# cluster it starts) goes to a folder of its own, removed after a good run.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="dist-qemu-bench-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{BENCH_DIR / 'bench.sqlite3'}"
# The guest boots from its build cache, a host path (its clusters inherit this too).
os.environ["DISTRIBUTOR_QEMU_HOST_IMAGES"] = "1"

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402
from pyroute2 import netns  # noqa: E402

from distributor.environment import host_environment, network_config  # noqa: E402
from sessions import EventTracker, SessionInfo  # noqa: E402
from sessions import qemu_network as network  # noqa: E402
from sessions.qemu import QemuSession  # noqa: E402

SEED_FIXED_DELAY_S = 20.0
SEED_TASKSETS_PER_MINUTE = 15  # per machine, against an instant target (DESIGN §5)
# The engine's job: variants of one 'hey' job each, far more than a round runs.
ENGINE_JOB = {"name": "bench-qemu", "tasksets": [{"tasks": [
    {"pkg": "hey", "config": {"arg1": {"range": [0, 1_000_000]}}, "period": 0, "numberofjobs": 1, "priority": 10},
]}]}
GUEST_BUILD = Path(__file__).resolve().parent.parent / "tests" / "guest" / "build.sh"
HEY = {"id": 0, "pkg": "hey", "arg1": 1, "priority": 10, "deadline": 0, "period": 0, "offset": 0,
       "numberofjobs": 1, "criticaltime": 0, "quota": "100M", "caps": 235, "cores": 1, "coreoffset": 0}


class BenchSession(QemuSession):
    """Sends no binaries: the guest runs its built-in programs, and a real
    machine sends each binary only once per boot anyway."""

    def _binaries_to_send(self, tasks):
        return []


def build_guest() -> dict[str, str]:
    result = subprocess.run(["bash", str(GUEST_BUILD)], capture_output=True, text=True, check=False,
                            env={**os.environ, "GUEST_CACHE": GUEST_CACHE})
    if result.returncode != 0:
        sys.exit(f"tests/guest/build.sh failed:\n{result.stderr[-2000:]}")
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


class Guest(threading.Thread):
    """One slot's whole life: boots, then task-set rounds on request, then stop."""

    def __init__(self, slot: int, guest: dict, consoles: Path, boots: int):
        super().__init__(name=f"guest-{slot}", daemon=True)
        info = SessionInfo(machine_id=slot, slot=slot, address="", log=logging.getLogger(f"bench.{slot}"),
                           settings={"kernel": guest["KERNEL"], "initrd": guest["INITRD"]},
                           console_path=consoles / f"guest-{slot}.log", target_timeout=30.0, host=host_environment())
        self.session = BenchSession(info)
        self.boots, self.boot_seconds, self.error = boots, [], None
        self.rounds: list[tuple[threading.Barrier, float]] = []
        self.round_ready = threading.Event()
        self.counts: list[int] = []
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            for _ in range(self.boots):
                self.session.start_host()
                self.boot_seconds.append(self.session.boot_seconds)
            self.finished.set()
            while self.round_ready.wait() and self.rounds:
                barrier, seconds = self.rounds.pop(0)
                self.round_ready.clear()
                barrier.wait()
                self.counts.append(tasksets_for(self.session, seconds))
                barrier.wait()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            self.error = error
            self.finished.set()
        finally:
            self.session.stop_host()

    def start_round(self, barrier: threading.Barrier, seconds: float) -> None:
        self.rounds.append((barrier, seconds))
        self.round_ready.set()

    def end(self) -> None:
        self.rounds.clear()
        self.round_ready.set()


def tasksets_for(session: QemuSession, seconds: float) -> int:
    done, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        session.start([HEY])
        tracker = EventTracker([HEY])
        while not tracker.finished:
            tracker.feed(session.run(5.0))
        done += 1
    return done


def task_set_rounds(guests: list[Guest], seconds: float) -> None:
    for count in sorted({1, len(guests)}):
        barrier = threading.Barrier(count + 1)
        for guest in guests[:count]:
            guest.start_round(barrier, seconds)
        barrier.wait()
        barrier.wait()
        per_guest = [guest.counts[-1] * 60 / seconds for guest in guests[:count]]
        print(f"{count} machine(s): {sum(per_guest):.0f} task-sets/min in all "
              f"({', '.join(f'{rate:.0f}' for rate in per_guest)} per guest; one 'hey' job each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=2)
    parser.add_argument("--boots", type=int, default=2)
    parser.add_argument("--tasksets-seconds", type=float, default=30.0)
    parser.add_argument("--engine-seconds", type=float, default=60.0,
                        help="length of each engine round (1 and --guests machines); 0 skips them")
    parser.add_argument("--keep", action="store_true", help=f"keep the bench's folder ({BENCH_DIR})")
    args = parser.parse_args()
    if os.geteuid() != 0:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
        sys.exit("needs root: it creates a network namespace, a bridge and taps")
    guest = build_guest()
    name = f"dqbench{os.getpid()}"
    netns.create(name)
    ok = False
    with override_settings(DISTRIBUTOR_NETNS=name):
        cfg = network.up(network_config())
        try:
            run_guests(guest, BENCH_DIR, args)
            if args.engine_seconds > 0:
                engine_rounds(guest, name, args)
            ok = True
        finally:
            network.down(cfg)
            netns.remove(name)
    if ok and not args.keep:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    else:
        print(f"consoles, logs and database kept in {BENCH_DIR}")


def run_guests(guest: dict, data_dir: Path, args) -> None:
    guests = [Guest(slot, guest, data_dir, args.boots) for slot in range(args.guests)]
    for each in guests:
        each.start()
    for each in guests:
        each.finished.wait()
    print(f"boot to ready (QEMU start -> AVAILABLE), {args.guests} guest(s) booting at once; seed: fixed {SEED_FIXED_DELAY_S:g} s")
    for each in guests:
        if each.error:
            print(f"guest {each.session.info.slot}: failed: {each.error}")
            continue
        times = ", ".join(f"{seconds:.1f} s" for seconds in each.boot_seconds)
        print(f"guest {each.session.info.slot} ({each.session.info.address}): {times}   (seed: {SEED_FIXED_DELAY_S:g} s)")
    if args.tasksets_seconds > 0 and not any(each.error for each in guests):
        task_set_rounds(guests, args.tasksets_seconds)
    for each in guests:
        each.end()
        each.join(timeout=30)


# -- through the engine --------------------------------------------------------------


def engine_rounds(guest: dict, netns_name: str, args) -> None:
    """Task-sets per minute with the machines launched by the reconciler in
    a real machines cluster, each round from the moment its guests are ready."""
    from django.core.management import call_command

    from distributor import reconciler
    from distributor.management.commands.binary import store_binary
    from distributor.models import DistributorConfig, Target
    from tests.cluster import Cluster

    logging.getLogger("distributor").setLevel(logging.WARNING)  # no tick lines between the figures
    call_command("migrate", verbosity=0)
    config = DistributorConfig.get()
    # A guest may boot slowly on a busy host; nothing here is ever silent long.
    config.heartbeat_timeout_s, config.launch_timeout_s, config.target_timeout_s = 30, 120, 30
    config.idle_timeout_s = 600
    config.save()
    pool = {"kind": "qemu", "settings": {"kernel": guest["KERNEL"], "initrd": guest["INITRD"]}}
    target, _ = Target.objects.update_or_create(name="bench-qemu", defaults=pool)  # BENCH_DATABASE_URL: a rerun
    store_binary("hey", b"placeholder: the guest runs its built-in hey\n")
    counts = sorted({1, args.guests})
    cluster = Cluster.machines(workers=max(counts) + 1, extra_env={"DISTRIBUTOR_NETNS": netns_name})
    cluster.start()
    try:
        cluster.wait_ready(60)
        print(f"through the engine (machines cluster, {cluster.host}; database {engine_database()}); "
              f"seed: ~{SEED_TASKSETS_PER_MINUTE} task-sets/min per machine")
        for count in counts:
            engine_round(target, count, args.engine_seconds)
    finally:
        reconciler.kill_all()
        try:
            wait_for_machines(lambda live: not live, 30, "the machines stop")
        finally:
            cluster.stop()


def engine_round(target, count: int, seconds: float) -> None:
    from distributor import reconciler
    from distributor.models import Attempt, Machine, TaskSet
    from distributor.queue import submit_job

    reconciler.resume()  # lifts the previous round's kill
    reconciler.set_max_machines(count)
    submitted = time.monotonic()
    job = submit_job(json.dumps(ENGINE_JOB), target=target)
    machines = wait_for_machines(
        lambda live: len(live) == count and all(m.target_boots and m.state in (Machine.State.IDLE, Machine.State.BUSY)
                                                for m in live),
        300, f"{count} machine(s) with a ready guest")
    ready_after = time.monotonic() - submitted
    finished = TaskSet.objects.filter(job=job, state=TaskSet.State.FINISHED)
    before, began = finished.count(), time.monotonic()
    time.sleep(seconds)
    done, elapsed = finished.count() - before, time.monotonic() - began
    per_machine = [finished.filter(machine=m).count() for m in machines]
    reconciler.kill_all()
    wait_for_machines(lambda live: not live, 30, "the machines stop")
    job.cancel()
    failures = Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FAILED).count()
    print(f"{count} machine(s) through the engine: {done * 60 / elapsed:.0f} task-sets/min in all "
          f"({done} in {elapsed:.0f} s; task-sets per machine over the whole round: "
          f"{', '.join(map(str, per_machine))}); guests ready {ready_after:.1f} s after the "
          f"submission; {failures} failed attempt(s)")


def wait_for_machines(condition, timeout: float, what: str) -> list:
    """The live machines once ``condition(live machines)`` holds."""
    from distributor.models import Machine

    deadline = time.monotonic() + timeout
    while True:
        live = list(Machine.objects.filter(state__in=Machine.LIVE_STATES).order_by("slot"))
        if condition(live):
            return live
        if time.monotonic() > deadline:
            states = [(m.slot, m.state, m.activity, m.last_error[-300:]) for m in live]
            raise SystemExit(f"not within {timeout:g} s: {what}; live machines: {states}")
        time.sleep(0.2)


def engine_database() -> str:
    from django.db import connection

    settings = connection.settings_dict
    return f"SQLite {settings['NAME']}" if settings["ENGINE"].endswith("sqlite3") else f"PostgreSQL {settings['NAME']}"


if __name__ == "__main__":
    main()
