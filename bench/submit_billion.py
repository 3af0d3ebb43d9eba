"""Submitting a job of 10^9 variants: time and peak memory, against a small job.

Variants are expanded lazily, so the cost must not grow with the variant
count (target: under 1 s). Runs against a scratch SQLite database, or
PostgreSQL when DATABASE_URL is set.

    python bench/submit_billion.py
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-billion-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from distributor.models import Target  # noqa: E402
from distributor.queue import submit_job  # noqa: E402


def job_file(side: int) -> bytes:
    """One task-set whose two ranges give side × side variants."""
    return json.dumps({"name": f"{side}x{side}", "tasksets": [{"tasks": [
        {"pkg": "hey", "period": {"range": [1, side + 1]}, "config": {"arg1": {"range": [0, side]}}},
        {"pkg": "pi", "priority": 5, "period": 1000},
    ]}]}).encode()


def measure(data: bytes, target: Target) -> tuple[float, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    job = submit_job(data, target=target)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak / 2**20, job.variant_count


def main() -> None:
    call_command("migrate", verbosity=0)
    target = Target.objects.create(name="bench-dry", kind="stdio", settings={"print": False})
    from distributor.models import DistributorConfig

    DistributorConfig.get()
    DistributorConfig.objects.update(halted=True)  # measure the submission, not machine launches
    measure(job_file(2), target)  # warm-up: imports and first queries are not the job's cost
    print(f"{'variants':>16} {'seconds':>9} {'peak MiB':>9}")
    rows = [measure(job_file(side), target) for side in (10, 1000, 31623)]
    for elapsed, peak, count in rows:
        print(f"{count:>16,} {elapsed:>9.4f} {peak:>9.2f}")
    small, billion = rows[0], rows[-1]
    print(f"time ratio 10^9 / 10^2 variants: {billion[0] / small[0]:.2f}; memory ratio: {billion[1] / small[1]:.2f}")
    print(f"target: under 1 s for 10^9 variants -> {'met' if billion[0] < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
