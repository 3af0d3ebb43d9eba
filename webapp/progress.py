"""Progress, rate and ETA of jobs, for pages that show many jobs at once.

``Job.progress()`` costs a query per job; the dashboard and the jobs list show
a page of jobs every two seconds, so ``progress_of`` counts for a whole page
in at most two grouped queries and leaves the arithmetic to the same
``Job.progress_from``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count
from django.utils import timezone

from distributor.models import Job, TaskSet

# The rate is measured over the most recently finished task-sets: enough to be
# steady, few enough to follow a change of the machine count within minutes.
RATE_SAMPLE = 50


@dataclass
class Progress:
    total: int
    queued: int
    running: int
    finished: int
    bad: int
    cancelled: int
    percent: float
    rate_per_min: float | None = None  # task-sets ended per minute, recently
    eta_s: float | None = None  # seconds until the last task-set ends at that rate

    @property
    def done(self) -> int:
        return self.finished + self.bad

    def share(self, part: str) -> float:
        """Width of one segment of the progress bar, in percent."""
        return round(100 * getattr(self, part) / self.total, 3) if self.total else 0.0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def progress_of(jobs: list[Job]) -> dict[int, Progress]:
    """Job.progress() for many jobs in at most two queries."""
    ids = [job.pk for job in jobs]
    running = _counts(ids, TaskSet.State.RUNNING)
    cancelled_ids = [job.pk for job in jobs if job.state == Job.State.CANCELLED]
    cancelled = _counts(cancelled_ids, TaskSet.State.CANCELLED) if cancelled_ids else {}
    result = {}
    for job in jobs:
        result[job.pk] = Progress(**job.progress_from(running.get(job.pk, 0), cancelled.get(job.pk, 0)))
    return result


def _counts(ids: list[int], state: str) -> dict[int, int]:
    rows = TaskSet.objects.filter(job_id__in=ids, state=state).values("job_id").annotate(n=Count("id"))
    return {row["job_id"]: row["n"] for row in rows.order_by()}


def add_rate(job: Job, progress: Progress, now: datetime | None = None) -> Progress:
    """Fill in the rate and ETA: one indexed query of at most RATE_SAMPLE rows.

    Variants are handed out in order, so the highest finished variants are the
    latest to end; the (job, state, variant) index serves the query. A stalled
    job's rate decays toward zero as time passes since its last result.
    """
    now = now or timezone.now()
    if not job.is_active:
        if job.started_at and job.ended_at and progress.done:
            seconds = (job.ended_at - job.started_at).total_seconds()
            progress.rate_per_min = round(60 * progress.done / seconds, 2) if seconds > 0 else None
        return progress
    ended = list(
        TaskSet.objects.filter(job=job, state=TaskSet.State.FINISHED)
        .order_by("-variant").values_list("ended_at", flat=True)[:RATE_SAMPLE]
    )
    ended = [moment for moment in ended if moment is not None]
    if not ended:
        return progress
    seconds = (now - min(ended)).total_seconds()
    if seconds <= 0:
        return progress
    per_second = len(ended) / seconds
    progress.rate_per_min = round(60 * per_second, 2)
    remaining = progress.queued + progress.running
    progress.eta_s = remaining / per_second if per_second > 0 else None
    return progress
