"""Analytic labels of task-sets: the one place that computes them
(``label_tasks``, which machines call too) and that stores them anew
(``relabel``).

A task-set's labels (``TaskSet.analysis``, from ``distributor.analysis``)
need its tasks and an execution-time model, never a run. A machine labels
what it finishes with its target's model (loaded once per machine); a
task-set that ends bad gets labels too, from the machine that had it or,
on the reconciler's and the operator's paths, from ``label_stored``.
``relabel`` recomputes the labels of many stored task-sets with their
target's model or another one (``manage.py relabel``): a new model, or a new
version of the analysis, needs no new run.

``relabel`` streams: task-sets in id order, a chunk at a time (keyset
pagination, so the last chunk costs what the first did), their tasks in one
query per chunk, and each chunk's labels written in one transaction. Each
chunk commits on its own, in id order, so an interrupted relabel keeps what
it did and a rerun redoes everything to the same values. The analysis is
pure Python and most of the cost (0.4 ms a set against 0.1 ms of reading and
writing), so with ``workers`` > 1 forked processes analyse while this one
reads the next chunk and writes the last.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from django.db.models import QuerySet

from distributor.analysis import ANALYSIS_VERSION, analyse
from distributor.models import Job, Target, Task, TaskSet
from distributor.models.etm import DEFAULT_MODEL, resolve
from distributor.models.tasksets import store_analyses
from sessions import etm as etm_module
from sessions.etm import EtmError, ExecutionTimeModel

log = logging.getLogger(__name__)

CHUNK_SIZE = 1000
# A relabel asked from a page or the API runs in the request: at ~0.4 ms a set,
# this many take about a minute. Larger jobs: manage.py relabel (workers, progress).
REQUEST_RELABEL_MAX = 150_000
DEFAULT_WORKERS = min(os.cpu_count() or 1, 4)
ENDED_STATES = (TaskSet.State.FINISHED, TaskSet.State.BAD)
TASK_COLUMNS = ("taskset_id", "task_id", *Task.FIELDS)
TASK_KEYS = ("id", *Task.FIELDS)  # a task as a claim gives it (Task.as_dict)

Progress = Callable[[int, int], None]  # (task-sets done, total), after each committed chunk


def etm_for(target: Target, name: str | dict | None = None) -> ExecutionTimeModel:
    """The newest version of the stored model ``name`` if given, else of the
    target's own ``etm`` setting (default genode-defaults): the one its
    results are measured against, marked ``calibrated`` when that version was
    calibrated on this target. A model given as a dict (no stored version)
    is used as it is. Raises EtmError."""
    value = name if name is not None else (target.settings or {}).get("etm", DEFAULT_MODEL)
    if isinstance(value, dict):
        return etm_module.ExecutionTimeModel.from_dict(value)
    return resolve(value).evaluator(target.name)


def label_tasks(tasks: list[dict], etm: ExecutionTimeModel) -> dict:
    """The labels of one task-set; never raises (``analyse`` keeps its errors inside)."""
    return analyse(tasks, etm)


def label_stored(taskset: TaskSet) -> dict | None:
    """Labels for one stored task-set from its rows and its target's model,
    or None (logged) when that model cannot be loaded: the state change that
    asks for them goes ahead without."""
    try:
        model = etm_for(Target.objects.only("settings").get(jobs__pk=taskset.job_id))
    except EtmError as error:
        log.warning("task-set %s left without labels: execution-time model: %s", taskset.pk, error)
        return None
    tasks = [dict(zip(TASK_KEYS, row)) for row in
             Task.objects.filter(taskset_id=taskset.pk).order_by("task_id").values_list(*TASK_COLUMNS[1:])]
    return label_tasks(tasks, model)


@dataclass
class Relabelled:
    """What a relabel did, for its summary line."""

    count: int = 0
    total: int = 0
    seconds: float = 0.0
    analysis_version: int = ANALYSIS_VERSION
    etms: set[tuple[str, int]] = field(default_factory=set)  # (name, version) of every model used

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def selection(job_ids: Iterable[int], states: Iterable[str] = ENDED_STATES) -> QuerySet:
    """The task-sets of these jobs in these states (by default the ended
    ones: a queued or running set gets its labels when it ends)."""
    return TaskSet.objects.filter(job_id__in=list(job_ids), state__in=list(states))


def relabel(tasksets: QuerySet | Iterable[int], etm_name: str | dict | None = None, *,
            progress: Progress | None = None, chunk_size: int = CHUNK_SIZE, workers: int = 1) -> Relabelled:
    """Recompute and store the labels of ``tasksets`` (a TaskSet queryset, or
    job ids: their ended task-sets) with the model ``etm_name`` or each job's
    target's. Raises EtmError before writing anything when a model cannot be
    loaded. ``progress`` is called after every committed chunk and may raise
    to stop the relabel: what is committed stays."""
    queryset = tasksets if isinstance(tasksets, QuerySet) else selection(tasksets)
    started = time.perf_counter()
    models = _Models(etm_name, queryset)
    done = Relabelled(total=queryset.count())
    with _Analyser(workers) as analyser:
        in_flight: deque[tuple[int, set[int], Callable[[], list]]] = deque()
        for chunk in _chunks(queryset, chunk_size):
            jobs = {job_id for _, job_id in chunk}
            in_flight.append((len(chunk), jobs, analyser.submit(_work(chunk, models))))
            if len(in_flight) > 1:  # one chunk analysed while the next is read
                _store(*in_flight.popleft(), done, progress)
        while in_flight:
            _store(*in_flight.popleft(), done, progress)
    done.seconds = time.perf_counter() - started
    done.etms = models.used
    return done


def _chunks(queryset: QuerySet, size: int) -> Iterator[list[tuple[int, int]]]:
    """(task-set id, job id) in id order, ``size`` at a time: each read starts
    after the last id seen (no OFFSET: no chunk rereads those before it)."""
    rows = queryset.order_by("pk").values_list("pk", "job_id")
    last = None
    while True:
        chunk = list((rows if last is None else rows.filter(pk__gt=last))[:size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1][0]


def _work(chunk: list[tuple[int, int]], models: _Models) -> list[tuple[ExecutionTimeModel, list]]:
    """The chunk's task-sets with their tasks, grouped by model (one group unless jobs differ in target)."""
    tasks = _tasks_of([pk for pk, _ in chunk])
    groups: dict[int, tuple[ExecutionTimeModel, list]] = {}
    for pk, job_id in chunk:
        model = models.of_job(job_id)
        groups.setdefault(id(model), (model, []))[1].append((pk, tasks.get(pk, [])))
    return list(groups.values())


def _tasks_of(ids: list[int]) -> dict[int, list[dict]]:
    """Every task of these task-sets, in one query."""
    tasks: dict[int, list[dict]] = {}
    rows = Task.objects.filter(taskset_id__in=ids).order_by("taskset_id", "task_id").values_list(*TASK_COLUMNS)
    for taskset_id, *values in rows:
        tasks.setdefault(taskset_id, []).append(dict(zip(TASK_KEYS, values)))
    return tasks


def label_texts(model: ExecutionTimeModel, sets: list[tuple[int, list[dict]]]) -> list[tuple[int, str]]:
    """(task-set id, labels as JSON text): the work a worker process does,
    serialising included, so this process only reads and writes."""
    return [(pk, json.dumps(label_tasks(tasks, model))) for pk, tasks in sets]


def _store(count: int, jobs: set[int], result: Callable[[], list[tuple[int, str]]], done: Relabelled,
           progress: Progress | None) -> None:
    store_analyses(result(), jobs)  # one transaction, with the jobs' results marked stale
    done.count += count
    if progress is not None:
        progress(done.count, done.total)


class _Analyser:
    """Runs ``label_texts`` here (one worker) or in forked processes, a
    chunk split into one piece per worker; ``submit`` returns what gives
    the chunk's labels in order."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Analyser:
        if self.workers > 1:
            # fork: the children have the code already and never touch the
            # database (they leave by os._exit, so this process's
            # connection is never closed under it).
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_ignore_interrupts)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, work: list[tuple[ExecutionTimeModel, list]]) -> Callable[[], list[tuple[int, str]]]:
        if self.pool is None:
            return lambda: [row for model, sets in work for row in label_texts(model, sets)]
        futures = [self.pool.submit(label_texts, model, piece)
                   for model, sets in work for piece in _pieces(sets, self.workers)]
        return lambda: [row for future in futures for row in future.result()]


def _pieces(items: list, count: int) -> list[list]:
    size = -(-len(items) // count)
    return [items[start:start + size] for start in range(0, len(items), size)]


def _ignore_interrupts() -> None:
    """Ctrl-C is the parent's to handle: it stops submitting and the pool ends quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Models:
    """The model of each job: one named model for all, or each job's
    target's, all loaded before the first write (a job never changes
    target; a file is parsed once, ``sessions.etm``)."""

    def __init__(self, name: str | dict | None, queryset: QuerySet):
        self.used: set[tuple[str, int]] = set()
        self.name = name
        if name is not None:
            resolve(name) if not isinstance(name, dict) else etm_module.ExecutionTimeModel.from_dict(name)
        jobs = Job.objects.filter(pk__in=queryset.values("job_id")).select_related("target")
        self.by_target: dict[int, ExecutionTimeModel] = {}
        self.by_job = {job.pk: self._of_target(job.target) for job in jobs.only("pk", "target")}

    def of_job(self, job_id: int) -> ExecutionTimeModel:
        model = self.by_job.get(job_id) or self._load(job_id)
        self.used.add((model.name, model.version))
        return model

    def _of_target(self, target: Target) -> ExecutionTimeModel:
        """One model object per target: whether it is calibrated depends on the target."""
        if target.pk not in self.by_target:
            self.by_target[target.pk] = etm_for(target, self.name)
        return self.by_target[target.pk]

    def _load(self, job_id: int) -> ExecutionTimeModel:
        """A job that joined the selection after the start."""
        model = self.by_job[job_id] = self._of_target(Target.objects.get(jobs__pk=job_id))
        return model
