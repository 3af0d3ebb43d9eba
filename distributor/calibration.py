"""Calibration: execution times measured on a target become a model version.

``submit`` queues an ordinary job of single-task sets (one per package, per
``arg1`` in a range: ``numberofjobs`` jobs each, highest priority, a period
far longer than the job) and records that the job calibrates a model
(``Calibration``). When that job has ended, ``step`` (a step of every
reconciler tick, registered in ``apps.py``) fits the model's next version
from what it measured. ``fit`` does the same from any finished jobs.

A measurement is ``end - start`` of a task-job that ended EXIT, in a
task-set that finished on its first run (``runs == 1``: never put back,
failed or lost), and that no other job of the same task-set on the same core
overlapped (so it ran uninterrupted: preemption would add to it). Per
package and ``arg1`` the point keeps count, mean, min, max and spread
(standard deviation), and uses the maximum as the execution time (or the
mean: ``etm fit --statistic mean``; a model keeps its statistic); the
package's line is the least-squares fit of those figures against arg1. A
fit starts from the model's newest version (or genode-defaults' default for
a new model), so packages it did not measure keep their figures.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from distributor.models import Calibration, EtmModel, EtmVersion, Job, Target, TaskJob, TaskSet
from distributor.models.etm import DEFAULT_MODEL, resolve
from distributor.queue import submit_job
from distributor.taskfile import PKG_NAME
from sessions.etm import STATISTICS, EtmError

MAX_ARGS = 1000  # task-sets of one calibration job: packages × arg1 values
MAX_JOBS = 10_000
MIN_PERIOD_MS = 1000
PERIOD_FACTOR = 4  # the period is this many times the current model's figure, at least MIN_PERIOD_MS
DECIMALS = 3


class CalibrationError(ValueError):
    """Bad calibration input or nothing to fit; ``field`` names the option."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# -- the calibration job ------------------------------------------------------------


def calibration_file(pkgs: list[str], args: tuple[int, int], jobs: int, target: Target,
                     period_ms: int | None = None) -> dict:
    """The task-set file: per package one single-task set whose arg1 ranges
    over ``args`` (inclusive), ``jobs`` jobs at priority 0 with a period
    ``period_ms`` or PERIOD_FACTOR times the target's current figure."""
    first, last = args
    try:
        model = resolve((target.settings or {}).get("etm", DEFAULT_MODEL)).evaluator(target.name)
    except EtmError:
        model = resolve(DEFAULT_MODEL).evaluator()
    tasksets = []
    for pkg in pkgs:
        period = period_ms or max(MIN_PERIOD_MS, PERIOD_FACTOR * model.execution_time_ms(pkg, last))
        tasksets.append({"tasks": [{"pkg": pkg, "config": {"arg1": {"range": [first, last + 1]}}, "period": period,
                                    "priority": 0, "numberofjobs": jobs}]})
    return {"name": f"calibration of {', '.join(pkgs)}", "tasksets": tasksets}


def check_request(pkgs: list[str], args: tuple[int, int], jobs: int, name: str) -> None:
    """Raise CalibrationError naming the first bad option."""
    if not pkgs:
        raise CalibrationError("pkg", "name at least one package")
    for pkg in pkgs:
        if not PKG_NAME.fullmatch(pkg):
            raise CalibrationError("pkg", f"{pkg!r} is not a package name")
    first, last = args
    if first < 0 or last < first:
        raise CalibrationError("args", f"{first}:{last}: expected A:B with 0 ≤ A ≤ B")
    if len(pkgs) * (last - first + 1) > MAX_ARGS:
        raise CalibrationError("args", f"{len(pkgs) * (last - first + 1)} task-sets; at most {MAX_ARGS}")
    if not 1 <= jobs <= MAX_JOBS:
        raise CalibrationError("jobs", f"{jobs}: from 1 to {MAX_JOBS}")
    try:
        EtmModel.check_name(name)
    except ValueError as error:
        raise CalibrationError("name", str(error)) from None


def parse_args(text: str) -> tuple[int, int]:
    """"A:B" (or one number) as the inclusive range of arg1."""
    first, sep, last = str(text).partition(":")
    try:
        values = (int(first), int(last if sep else first))
    except ValueError:
        raise CalibrationError("args", f"{text!r}: expected A:B, two whole numbers") from None
    if max(values) > 2**31 - 1:
        raise CalibrationError("args", f"{text!r}: arg1 is at most {2**31 - 1}")
    return values


def submit(target: Target, pkgs: list[str], args: tuple[int, int], jobs: int, name: str, *,
           period_ms: int | None = None, owner=None) -> Calibration:
    """Queue the calibration job and record what it calibrates, together.
    Raises CalibrationError, or the queue's TaskFileError / ValidationError."""
    check_request(pkgs, args, jobs, name)
    spec = calibration_file(pkgs, args, jobs, target, period_ms)
    with transaction.atomic():
        job = submit_job(json.dumps(spec), filename="calibration.json", target=target,
                         name=f"calibrate {name} on {target.name}"[:200], owner=owner)
        return Calibration.objects.create(job=job, model_name=name)


def step() -> list[int]:
    """Fit every calibration whose job has ended (a reconciler step); returns their ids."""
    fitted = []
    for calibration in Calibration.objects.filter(ended_at__isnull=True).exclude(job__state__in=Job.ACTIVE_STATES):
        finish(calibration)
        fitted.append(calibration.pk)
    return fitted


def finish(calibration: Calibration) -> EtmVersion | None:
    """Fit the calibration's model from its job, once, even if two ticks race."""
    with transaction.atomic():
        locked = Calibration.objects.select_for_update().get(pk=calibration.pk)
        if locked.is_done:
            return locked.fitted
        try:
            version = fit([locked.job_id], locked.model_name)
        except (CalibrationError, ValidationError, EtmError) as error:  # recorded on the row; the tick goes on
            locked.done(None, str(error))
            return None
        locked.done(version)
        return version


# -- fitting ------------------------------------------------------------------------


def measurements(job_ids: Iterable[int]) -> dict[tuple[str, int], list[int]]:
    """(pkg, arg1) → the execution times (ms) measured uninterrupted in these jobs."""
    rows = (TaskJob.objects.filter(taskset__job_id__in=list(job_ids), taskset__state=TaskSet.State.FINISHED,
                                   taskset__runs=1)
            .order_by("taskset_id", "start_ms")
            .values_list("taskset_id", "exit_type", "start_ms", "end_ms", "task__pkg", "task__arg1",
                         "task__coreoffset"))
    by_set: dict[int, list[tuple]] = defaultdict(list)
    for taskset_id, *row in rows.iterator(chunk_size=5000):
        by_set[taskset_id].append(tuple(row))
    found: dict[tuple[str, int], list[int]] = defaultdict(list)
    for jobs in by_set.values():
        for index, (exit_type, start, end, pkg, arg1, core) in enumerate(jobs):
            if exit_type == "EXIT" and not _overlapped(jobs, index):
                found[(pkg, arg1)].append(end - start)
    return dict(found)


def _overlapped(jobs: list[tuple], index: int) -> bool:
    """Another job of the set ran on the same core while this one was between start and end."""
    _, start, end, _, _, core = jobs[index]
    return any(other_core == core and other_start < end and other_end > start
               for k, (_, other_start, other_end, _, _, other_core) in enumerate(jobs) if k != index)


def point(times: list[int], statistic: str = "max") -> dict:
    """A measured point: the statistic used (the maximum by default, or the
    mean), and what describes the measurements."""
    mean = sum(times) / len(times)
    spread = math.sqrt(sum((t - mean) ** 2 for t in times) / len(times))
    used = max(times) if statistic == "max" else round(mean, DECIMALS)
    return {"ms": used, "count": len(times), "mean": round(mean, DECIMALS), "min": min(times),
            "max": max(times), "spread": round(spread, DECIMALS)}


def line(points: dict[int, dict]) -> dict:
    """base_ms + per_arg_ms · arg1 through the points' figures (least squares,
    both terms ≥ 0)."""
    xs = sorted(points)
    ys = [points[x]["ms"] for x in xs]
    if len(xs) == 1:
        return {"base_ms": ys[0], "per_arg_ms": 0}
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    slope = max(0.0, slope)
    base = max(0.0, mean_y - slope * mean_x)
    return {"base_ms": round(base, DECIMALS), "per_arg_ms": round(slope, DECIMALS)}


def fit(job_ids: list[int], name: str, note: str | None = None, statistic: str | None = None) -> EtmVersion:
    """The next version of model ``name`` from the jobs' measurements.
    Calibrated on their target when they all ran on one. Raises
    CalibrationError when a job is unknown or nothing was measured."""
    jobs = list(Job.objects.filter(pk__in=job_ids).select_related("target"))
    missing = sorted(set(job_ids) - {job.pk for job in jobs})
    if missing:
        raise CalibrationError("job", f"no job {missing[0]}")
    found = measurements(job_ids)
    if not found:
        raise CalibrationError("job", "no task-job of these jobs ended EXIT uninterrupted: nothing to fit")
    document = _base_document(name)
    statistic = statistic or document.get("statistic", "max")
    if statistic not in STATISTICS:
        raise CalibrationError("statistic", f"{statistic!r}: one of {', '.join(STATISTICS)}")
    document["statistic"] = statistic
    by_pkg: dict[str, dict[int, dict]] = defaultdict(dict)
    for (pkg, arg1), times in sorted(found.items()):
        by_pkg[pkg][arg1] = point(times, statistic)
    for pkg, points in by_pkg.items():
        document["packages"][pkg] = {**line(points), "points": {str(arg1): p for arg1, p in points.items()}}
    targets = {job.target.name for job in jobs}
    target = targets.pop() if len(targets) == 1 else ""
    ids = sorted(job.pk for job in jobs)
    note = note if note is not None else (
        f"calibrated on {target or 'several targets'} from job(s) {', '.join(map(str, ids))}: "
        f"{sum(len(t) for t in found.values())} measured task-jobs of {', '.join(sorted(by_pkg))}")
    return EtmModel.add_version(name, document, calibrated=True, target=target, jobs=ids, note=note)


def _base_document(name: str) -> dict:
    """What a fit changes: the model's newest document, else a new one with genode-defaults' default."""
    model = EtmModel.named(name)
    latest = model.latest if model else None
    if latest is not None:
        document = json.loads(json.dumps(latest.document))
        document.setdefault("packages", {})
        return document
    default = resolve(DEFAULT_MODEL).document["default"]
    return {"name": name, "version": 1, "statistic": "max", "packages": {}, "default": default}


# -- what list, show and the API say about models -------------------------------------


def fitted_line(version: EtmVersion | None, name: str = "") -> dict:
    if version is None:
        return {"name": name, "version": None, "calibrated": False, "target": None, "jobs": []}
    return {"name": version.model.name, "version": version.version, "calibrated": version.calibrated,
            "target": version.target or None, "jobs": version.jobs,
            "packages": sorted(version.document.get("packages", {}))}


def summary(model: EtmModel) -> dict:
    """A model as list and the API show it: its newest version and who uses it."""
    latest = model.latest
    return {"name": model.name, "version": latest.version if latest else None,
            "calibrated": bool(latest and latest.calibrated), "target": latest.target if latest else "",
            "packages": sorted(latest.document.get("packages", {})) if latest else [],
            "targets": targets_using(model)}


def targets_using(model: EtmModel) -> list[str]:
    names = []
    for target in Target.objects.order_by("name").only("name", "settings"):
        setting = (target.settings or {}).get("etm", "genode-defaults")
        if isinstance(setting, str) and EtmModel.named(setting) == model:
            names.append(target.name)
    return names
