"""Genode throughput: task-sets per second per machine against the task-loader
peer at time-scale 0, through the real engine and a real machines cluster,
beside the seed system's figure.

    DATA_DIR=/tmp/dist-genode-engine python bench/genode_throughput.py [--machines 1,4,16]
        [--tasksets N] [--breakdown 300] [--cprofile]

The seed needed about 3.9 s per task-set per machine against an instant
target (2 s sleep after CLEAR, 2 s polls): about 15 per minute per machine,
about 245 per minute (4.1/s) for 16 machines. Issue 4's targets on this
2-core machine: over 25 task-sets/s with one machine (100x the seed) and
over 200/s with 16 machines (50x the seed's total).

16 peers (tests/peer, PeerFarm) serve on 127.0.0.2..17 inside this process;
one genode pool holds their 16 addresses and the operator's maximum decides
how many machines run. The harness (scratch database, warm-up, timing from
the job's first claim to its last result, cluster CPU from /proc, the
in-process breakdown of one machine's time) is bench/engine_throughput.py's;
here the "target" line of the breakdown is the socket round trips plus the
peer's own work, since the peer runs in the same process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_throughput as harness  # noqa: E402

SEED_SECONDS_PER_TASKSET = 3.9
BINARIES = {"hey": b"\x7fELF hey " * 2000, "pi": b"\x7fELF pi " * 3000}


def upload_binaries() -> None:
    from django.core.files.base import ContentFile

    from distributor.models import Binary

    for name, data in BINARIES.items():
        Binary.store(name, ContentFile(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", default="1,4,16", help="machine counts, comma-separated (at most 16)")
    parser.add_argument("--tasksets", type=int, default=0, help="task-sets per measured job (default 300 + 50·N)")
    parser.add_argument("--breakdown", type=int, default=300, help="task-sets of the in-process run (0: skip)")
    parser.add_argument("--cprofile", action="store_true", help="profile the in-process run with cProfile")
    options = parser.parse_args()
    counts = [int(n) for n in options.machines.split(",") if n.strip()]
    if any(not 1 <= n <= 16 for n in counts):
        sys.exit("--machines: 1 to 16 (one peer per machine)")

    label = harness.setup_django("genode")
    from distributor.models import Target
    from tests.peer import PeerFarm

    harness.configure()
    upload_binaries()
    print(f"genode throughput against the task-loader peer at time-scale 0, {label}, {os.cpu_count()} CPUs, "
          f"task-set = {harness.TASKS_PER_SET} tasks x {harness.JOBS_PER_TASK} jobs")
    with PeerFarm(16, time_scale=0) as farm:
        target = Target.objects.create(name="bench-peers", kind="genode", addresses=farm.addresses)
        if options.breakdown:
            result = harness.breakdown(target, options.breakdown, options.cprofile)
            print(f"\none machine in this process (peer in this process too), {options.breakdown} task-sets "
                  f"in {result['total']:.2f} s ({options.breakdown / result['total']:.1f}/s):")
            harness.print_breakdown(result)
            harness.configure()
        if counts:
            run_cluster(target, farm, counts, options.tasksets)


def run_cluster(target, farm, counts: list[int], tasksets: int) -> None:
    cluster = harness.start_cluster(16)
    results = []
    try:
        for n in counts:
            before = len(farm.tasksets)
            result = harness.measure(target, n, tasksets or 300 + 50 * n, cluster)
            started = len(farm.tasksets) - before
            expected = result["count"] + 3 * n  # and the warm-up
            assert started == expected, f"the peers started {started} task-sets, expected {expected}"
            errors = [error for peer in farm.peers for error in peer.errors]
            assert not errors, errors[:3]
            results.append(result)
            time.sleep(1)
    finally:
        harness.stop_machines()
        cluster.stop()
    print("\nthrough a real machines cluster (16 workers), seed = one task-set per 3.9 s per machine:")
    harness.print_rates(results, seed=True)
    for r in results:
        print(f"  {r['machines']:>2} machine(s): CPU per task-set: machines cluster {1000 * r['cluster_cpu'] / r['count']:.1f} ms, "
              f"peers (this process) {1000 * r['process_cpu'] / r['count']:.1f} ms, "
              f"PostgreSQL {1000 * r['db_cpu'] / r['count']:.1f} ms; wall {r['wall']:.2f} s from submit")
    targets = {1: 25.0, 16: 200.0}
    for r in results:
        if r["machines"] in targets:
            goal = targets[r["machines"]]
            verdict = "met" if r["rate"] >= goal else "MISSED"
            print(f"  target for {r['machines']} machine(s): over {goal:g} task-sets/s -> {r['rate']:.1f}/s, {verdict}")


if __name__ == "__main__":
    main()
