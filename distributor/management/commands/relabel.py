"""python manage.py relabel --job N [--job M …] [--etm NAME] [--state finished|bad …] [--workers N]"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from django.core.management.base import BaseCommand, CommandError

from distributor import summaries
from distributor.audit import cli_actor, record
from distributor.labels import DEFAULT_WORKERS, ENDED_STATES, Relabelled, relabel, selection
from distributor.management.options import job_ids
from sessions.etm import EtmError


class Command(BaseCommand):
    help = ("Recompute the analytic labels of stored task-sets (nothing runs): with each job's target's "
            "execution-time model, or --etm. Safe to interrupt and run again.")

    def add_arguments(self, parser):
        parser.add_argument("--job", action="append", default=[], help="a job whose task-sets to relabel (repeatable)")
        parser.add_argument("--etm", default=None, metavar="MODEL",
                            help="a stored execution-time model, its newest version (etm list; "
                                 "default: each target's own)")
        parser.add_argument("--state", action="append", default=[],
                            help=f"only task-sets in this state: {' or '.join(ENDED_STATES)} "
                                 "(repeatable; default both)")
        parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                            help=f"processes that analyse (default {DEFAULT_WORKERS}, the cores up to 4)")

    def handle(self, *args, **opts):
        jobs = self._jobs(opts["job"])
        states = self._states(opts["state"])
        if opts["workers"] < 1:
            raise CommandError("--workers: must be at least 1")
        bar = ProgressBar(sys.stderr)
        try:
            done = relabel(selection(jobs, states), opts["etm"], progress=bar, workers=opts["workers"])
        except EtmError as error:
            where = "--etm" if opts["etm"] else "the target's execution-time model"
            raise CommandError(f"{where}: {error}") from None
        except KeyboardInterrupt:
            bar.close()
            raise CommandError(f"interrupted after {bar.done:,} task-sets: those keep their new labels; "
                               "run the same command again to finish") from None
        bar.close()
        record(cli_actor(), "relabel", "jobs " + ", ".join(map(str, jobs)),
               {"etm": opts["etm"], "states": list(states), "tasksets": done.count,
                "used": sorted(f"{n} v{v}" for n, v in done.etms)})
        self.stdout.write(summary(done))
        started = time.monotonic()
        if computed := summaries.compute_ended_jobs(jobs):
            self.stdout.write(f"results of {computed} ended job(s) summarised in {time.monotonic() - started:.1f} s")

    def _jobs(self, values: list[str]) -> list[int]:
        if not values:
            raise CommandError("--job: give at least one job id")
        return job_ids(values)

    def _states(self, values: list[str]) -> tuple[str, ...]:
        for value in values:
            if value not in ENDED_STATES:
                raise CommandError(f"--state: {value!r}; choose {' or '.join(ENDED_STATES)}")
        return tuple(values) or ENDED_STATES


def summary(done: Relabelled) -> str:
    models = ", ".join(f"{name} v{version}" for name, version in sorted(done.etms)) or "none used"
    return (f"relabelled {done.count:,} task-sets in {done.seconds:.1f} s ({done.rate:,.0f}/s); "
            f"analysis v{done.analysis_version}; execution-time model {models}")


class ProgressBar:
    """done/total, rate and ETA on one line of ``stream``, redrawn with ``\\r``
    at most every 0.2 s; nothing but the final line when it is not a terminal."""

    WIDTH = 30

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.live = stream.isatty()
        self.started = self.drawn_at = time.monotonic()
        self.line = ""
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.done = done
        self.line = self._render(done, total, now - self.started)
        if self.live and (now - self.drawn_at >= 0.2 or done >= total):
            self.stream.write("\r" + self.line)
            self.stream.flush()
            self.drawn_at = now

    def close(self) -> None:
        if self.line:
            self.stream.write(("\r" if self.live else "") + self.line + "\n")
            self.stream.flush()

    def _render(self, done: int, total: int, seconds: float) -> str:
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        return (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:,}/{total:,} {share:6.1%} "
                f"{rate:,.0f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
