"""taskjobs-parquet against taskjobs-csv and COPY on PostgreSQL: rate and peak memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dist_bench \\
        python bench/export_parquet.py [--tasksets 20000] [--tasks 5] [--jobs 100] [--python-path]

Fills the benchmark job of export_rate.py with tasksets × tasks × jobs
task-job rows (10 million by default; kept for the next run), then streams
them to /dev/null, each way in a child process of its own so that each peak
RSS is its own:

* ``taskjobs-parquet``: ``distributor.exports.parquet_chunks``, the generator
  the web, the API and the command use (on PostgreSQL the export's SELECT
  inside COPY, parsed by Arrow a block at a time, written a row group at a time);
* ``taskjobs-csv``: ``distributor.exports.taskjobs_csv``, what ``csv_chunks``
  gives for it (COPY of the same SELECT, decoded, in chunks);
* ``COPY (the export's SELECT) TO STDOUT WITH (FORMAT csv)`` read with psycopg.

Targets (issue 17): Parquet at least the CSV export's rate, peak RSS < 200 MB.
``--python-path`` also times both exports' portable path (server-side cursor,
Python rows), the one SQLite uses.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from pg_common import bench_job, rate, rows_arguments, setup_django

WAYS = ("taskjobs-parquet", "taskjobs-csv", "copy")


def main() -> None:
    parser = rows_arguments(__doc__.splitlines()[0])
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)  # a child's single measurement
    parser.add_argument("--method", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_django()
    from distributor.exports import Selection
    from export_rate import fill

    job = bench_job("export-rate")
    if args.one:
        print(json.dumps(measure(args.one, Selection(jobs=(job.pk,)), args.method)))
        return
    total = fill(job, args.tasksets, args.tasks, args.jobs)
    print(f"task-jobs: {total:,} rows")
    results = {way: child(way, "auto") for way in WAYS}
    for way, result in results.items():
        print(f"{way + ':':18} {rate(total, result['seconds'])}, {result['bytes'] / 2**20:,.0f} MiB, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")
    parquet, csv, copy = (results[way]["seconds"] for way in WAYS)
    print(f"ratio Parquet / CSV export rate: {csv / parquet:.2f} (target ≥ 1)")
    print(f"ratio Parquet / COPY rate:       {copy / parquet:.2f}")
    if args.python_path:
        for way in WAYS[:2]:
            result = child(way, "python")
            print(f"{way} (portable path): {rate(total, result['seconds'])}, peak RSS {result['peak_rss_mb']:.0f} MB")


def child(way: str, method: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--one", way, "--method", method], check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(way: str, selection, method: str) -> dict:
    """Seconds, bytes written and this process's peak RSS for one way."""
    from distributor import exports
    from export_rate import copy_same_select

    started = time.perf_counter()
    if way == "copy":
        size = copy_same_select(selection)
    else:
        if way == "taskjobs-parquet":
            chunks = exports.parquet_chunks(way, selection, method)
        else:
            chunks = exports.taskjobs_csv(selection, method)
        size = 0
        with open("/dev/null", "wb") as sink:
            for chunk in chunks:
                data = chunk if isinstance(chunk, bytes) else chunk.encode()
                size += len(data)
                sink.write(data)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": size, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM, which starts anew at exec. (getrusage's
    ru_maxrss does not: a child reports at least what its parent held when it
    forked, and the parent that has just filled the rows holds some 165 MB.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
