"""A job's or a campaign's results, computed at most once per state of its
task-sets and stored in the database (``ResultsSummary``), so that every
process and host serves them without counting millions of rows per view.

The figures (``distributor.results``, ``distributor.plots``) change only when
a task-set of the scope ends, or when stored labels change. The key of a
job's state is therefore its ended counts (``Job.finished_count`` and
``bad_count``, tallied in the transaction that ends a set, so the engine's
hot path keeps no extra counter) and its ``results_generation``, bumped in
the transaction that stores labels (``tasksets.store_analyses``). A campaign's key is its level jobs' keys.

A part is computed between two reads of the key; it is settled when both
reads agree: no commit that changes the figures happened in between, so the
figures are exactly those of that state. Otherwise (a running job) it is
stored unsettled: it matches no state, and is served only while the scope is
active, younger than FRESH_WHILE_ACTIVE and of the same results generations
(a relabel is never hidden), marked "as of" its time. An ended job's parts are computed off the request by
the reconciler (``queue_ended_jobs``) and after ``manage.py relabel``
(``compute_ended_jobs``), else by the first view that finds one missing or
stale. Concurrent computes of a part each store figures right for
their key: the last writer wins.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import CharField, Count, Exists, OuterRef, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from distributor import plots, results
from distributor.background import run_in_background
from distributor.models import Job, ResultsSummary

log = logging.getLogger(__name__)

FRESH_WHILE_ACTIVE = timedelta(seconds=30)
# Jobs that ended this recently have their parts computed by the reconciler.
RECENTLY_ENDED = timedelta(minutes=30)
# Ended jobs never summarised (from before summaries were kept) queued per tick.
NEVER_SUMMARISED_PER_TICK = 5
ENDED_STATES = (Job.State.FINISHED, Job.State.CANCELLED)
RESULTS, LABELS = "results", "labels"
STORED_PLOTS = ("response-times", "exit-types")  # the schedulability plot is drawn from RESULTS


@dataclass
class Scope:
    """A job or a campaign: what its summaries are stored under."""

    job: Job | None = None
    campaign: Any = None  # distributor.campaigns.models.Campaign, which imports this layer

    def __post_init__(self) -> None:
        self._first: tuple[str, dict[str, ResultsSummary]] | None = None

    @property
    def name(self) -> str:
        return job_scope(self.job.pk) if self.job is not None else f"campaign-{self.campaign.pk}"

    def rows(self) -> QuerySet:
        return results.tasksets_for(self.job, self.campaign)

    def job_ids(self) -> QuerySet:
        if self.job is not None:
            return Job.objects.filter(pk=self.job.pk)
        return Job.objects.filter(pk__in=self.campaign.levels.values("job_id"))

    def first_look(self) -> tuple[str, dict[str, ResultsSummary]]:
        """The key and the stored parts, read once for all the parts a view
        shows (the key before any of them is computed, as ``part`` needs)."""
        if self._first is None:
            key = self.key()
            self._first = key, {row.part: row for row in ResultsSummary.objects.filter(scope=self.name)}
        return self._first

    def key(self) -> str:
        """The state of the scope's figures, read now (one query)."""
        rows = self.job_ids().order_by("pk").values_list(*KEY_FIELDS)
        return ";".join(_job_key(*row) for row in rows)

    def started(self) -> int:
        """How many task-sets exist: a row for every variant ever started
        (``Job.cursor``), so no row is counted."""
        if self.job is not None:
            return self.job.started
        return sum(cursor - offset for cursor, offset in self.job_ids().values_list("cursor", "offset"))

    def is_active(self) -> bool:
        if self.job is not None:
            return self.job.is_active
        return self.campaign.state == "running" or self.job_ids().filter(state__in=Job.ACTIVE_STATES).exists()


@dataclass
class Served:
    """A part's data and the moment its figures are of; ``current`` when
    computed for the state the scope is in now."""

    data: Any
    as_of: datetime
    current: bool


def part(scope: Scope, name: str, compute: Callable[[], Any]) -> Served:
    """The stored part ``name`` of ``scope`` if it is current (or, for an
    active scope, recent and of the same labels), else computed now by
    ``compute`` and stored."""
    key, stored = scope.first_look()
    row = stored.get(name)
    if row is not None and row.settled and row.key == key:
        return Served(row.data, row.computed_at, True)
    if (row is not None and scope.is_active() and row.computed_at >= timezone.now() - FRESH_WHILE_ACTIVE
            and _generations(row.key) == _generations(key)):  # a relabel is never hidden
        return Served(row.data, row.computed_at, False)
    return _compute(scope, name, compute, key)


KEY_FIELDS = ("pk", "finished_count", "bad_count", "results_generation")


def job_scope(pk: int) -> str:
    """What a job's summaries are stored under."""
    return f"job-{pk}"


def _job_key(pk: int, finished: int, bad: int, generation: int) -> str:
    """One job's part of a key (KEY_FIELDS): what its figures depend on."""
    return f"{pk}:{finished}.{bad}.{generation}"


def _generations(key: str) -> list[str]:
    """The jobs and their results generations in a key: what a relabel changes."""
    return [f"{job.split(':')[0]}.{job.rsplit('.', 1)[-1]}" for job in key.split(";") if job]


def _compute(scope: Scope, name: str, compute: Callable[[], Any], before: str) -> Served:
    started = timezone.now()
    data = compute()
    settled = scope.key() == before
    try:
        with transaction.atomic():
            ResultsSummary.objects.bulk_create(
                [ResultsSummary(scope=scope.name, part=name, key=before, settled=settled, data=data,
                                computed_at=started)],
                update_conflicts=True, unique_fields=["scope", "part"],
                update_fields=["key", "settled", "data", "computed_at"])
    except DatabaseError as error:  # the figures are right; the next view computes them again
        log.warning("results summary %s %s not stored: %s", scope.name, name, error)
    return Served(data, started, settled)


# -- the parts ------------------------------------------------------------------------


def summary(scope: Scope) -> tuple[results.Results, Served]:
    """The agreement matrix and schedulability bins (``results.Results``)."""
    served = part(scope, RESULTS, lambda: results_data(results.summarise(scope.rows())))
    return results_from(served.data), served


def plot(scope: Scope, name: str) -> str:
    """The SVG text of the plot ``name`` (a key of ``plots.PLOTS``)."""
    if name == "schedulability":
        return plots.schedulability_svg(summary=summary(scope)[0])
    if name not in plots.PLOTS:
        raise KeyError(f"unknown plot {name!r}; known: {', '.join(plots.PLOTS)}")
    return part(scope, f"plot-{name}", lambda: plots.plot_svg(name, job=scope.job, campaign=scope.campaign)).data


def labels_used(scope: Scope) -> list[dict]:
    """Which execution-time models the scope's labels use, with their task-set counts."""
    def compute() -> list[dict]:
        used = (scope.rows().filter(analysis__isnull=False)
                .values("analysis__etm__name", "analysis__etm__version", "analysis__etm__calibrated")
                .annotate(sets=Count("id")).order_by("analysis__etm__name", "analysis__etm__version"))
        return [{"name": row["analysis__etm__name"], "version": row["analysis__etm__version"],
                 "calibrated": bool(row["analysis__etm__calibrated"]), "sets": row["sets"]} for row in used]

    return part(scope, LABELS, compute).data


def results_data(summary: results.Results) -> dict:
    return {"finished": summary.finished, "labelled": summary.labelled, "matrix": summary.matrix,
            "exact": summary.exact, "bins": [[b, counts] for b, counts in sorted(summary.bins.items())],
            "disagree": summary.disagree, "disagree_exact": summary.disagree_exact}


def results_from(data: dict) -> results.Results:
    return results.Results(finished=data["finished"], labelled=data["labelled"], matrix=data["matrix"],
                           exact=data["exact"], bins={int(b): counts for b, counts in data["bins"]},
                           disagree=data["disagree"], disagree_exact=data["disagree_exact"])


# -- off the request: jobs that just ended ----------------------------------------------------


JOB_PARTS = (RESULTS, LABELS, *(f"plot-{name}" for name in STORED_PLOTS))


def compute_job_part(job_id: int, name: str) -> None:
    """A django-q2 task: compute one part of an ended job unless it is current."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return
    scope = Scope(job=job)
    if name == RESULTS:
        summary(scope)
    elif name == LABELS:
        labels_used(scope)
    else:
        plot(scope, name.removeprefix("plot-"))


def compute_ended_jobs(job_ids: list[int]) -> int:
    """Compute now every part of those of these jobs that ended (after a
    relabel from the command line, whose user waits anyway: no view of a
    large job then computes them in its request). Returns how many jobs."""
    ended = list(Job.objects.filter(pk__in=job_ids, state__in=ENDED_STATES).values_list("pk", flat=True))
    for pk in ended:
        for name in JOB_PARTS:
            compute_job_part(pk, name)
    return len(ended)


def queue_ended_jobs() -> int:
    """Queue a compute of each missing or stale part of the jobs that ended
    lately (the reconciler's tick), once per state: a "requested" row holds
    the key they were queued for. Also a few ended jobs that have never been
    summarised (those that ended before summaries were kept), the newest
    first, so that after an upgrade their first views are fast too. Three
    reads whatever the number of jobs. Returns how many parts were queued."""
    ended = Job.objects.filter(state__in=ENDED_STATES)
    recent = ended.filter(ended_at__gte=timezone.now() - RECENTLY_ENDED)
    never = (ended.annotate(summarised=Exists(ResultsSummary.objects.filter(
        scope=Concat(Value("job-"), Cast(OuterRef("pk"), CharField()))))).filter(summarised=False)
        .order_by("-pk")[:NEVER_SUMMARISED_PER_TICK])
    keys = {row[0]: _job_key(*row) for jobs in (recent, never) for row in jobs.values_list(*KEY_FIELDS)}
    if not keys:
        return 0
    stored: dict[str, dict[str, str]] = {job_scope(pk): {} for pk in keys}
    for scope, part_name, key, settled in ResultsSummary.objects.filter(scope__in=stored).values_list(
            "scope", "part", "key", "settled"):
        if settled:
            stored[scope][part_name] = key
    queued = 0
    for pk, key in keys.items():
        parts = stored[job_scope(pk)]
        missing = [name for name in JOB_PARTS if parts.get(name) != key]
        if not missing or parts.get("requested") == key:
            continue
        ResultsSummary.objects.update_or_create(scope=job_scope(pk), part="requested", defaults={
            "key": key, "settled": True, "data": missing, "computed_at": timezone.now()})
        for name in missing:
            run_in_background("distributor.summaries.compute_job_part", pk, name, group="results")
        queued += len(missing)
    return queued
