"""A local target: the whole task-set simulated in SimSo, reported as Genode would.

``start`` simulates the task-set at once and keeps the events a Genode target
would have sent (DESIGN §5); ``run`` hands them over on its first call. They
go through the same ``EventTracker`` as a real target's, so a simulated
task-set ends in the same task-job rows.

What is simulated (times in whole ms):

* **Releases.** Each task releases exactly ``numberofjobs`` jobs. With
  ``period`` > 0 job k is released at ``offset + k·period``; with ``period``
  0 the jobs run back to back: job 0 at ``offset``, job k+1 the moment job k
  ends (normally or killed). SimSo's own task types release until the
  simulation ends, so ``GenodeTask`` (a ``GenericTask``) releases the jobs
  itself.
* **Scheduling** (``GenodeScheduler``, one preemptive single-processor class
  for FP, EDF and the mix). Genode priorities: 0 is the highest, 127 the
  lowest, 128 means "no priority, schedule by deadline". Every task with a
  priority (0..127) outranks every 128 task; 128 tasks go earliest absolute
  deadline first. The absolute deadline is release + ``deadline`` if
  ``deadline`` > 0, else release + ``period`` if ``period`` > 0, else none
  (after every deadline). All 128 is plain EDF, none 128 plain FP. Ties go to
  the earlier release, then the lower task id, and a running job is only
  preempted by a strictly better priority or deadline. (SimSo's own FP runs
  the *highest* number first; we never use it.)
* **Execution time** of every job of a task: ``sessions.etm`` for its ``pkg``
  and ``config.arg1``, whole ms (the ``etm`` setting picks the model).
* **Kills.** A job still running at its period end (``period`` > 0) is killed
  there: EXIT_PERIOD. With ``criticaltime`` > 0 a job still running
  ``criticaltime`` ms after its release is killed: EXIT_CRITICAL. The earlier
  kill wins; on a tie the period end wins (``sessions.outcomes.kill``). A job
  that completes at the very instant of its kill ends normally. A killed job that never got the CPU
  before the kill is reported NOT_SCHEDULED with start = end = kill time. A
  deadline miss alone kills nothing: the job ends late with EXIT.
* **Events.** START at a job's first dispatch (SimSo's ``start_date`` is its
  activation, not its first dispatch: ``GenodeJob`` records the first
  execution itself), then EXIT / EXIT_PERIOD / EXIT_CRITICAL at its end, or a
  lone NOT_SCHEDULED; JOBS_DONE at the end of a task's last job. Events are
  sorted by time; at one instant ends come before JOBS_DONE, which comes
  before starts, then by task id.
* **Cores.** Tasks are partitioned by ``coreoffset``, as the analysis
  partitions them: each core is simulated apart (tasks on different cores
  never interfere) and the events merged. A task with ``cores`` > 1 runs on
  its first core only; the analysis calls no verdict of such a set exact.
* **Ignored:** ``quota`` and ``caps`` (no OUT_OF_QUOTA / OUT_OF_CAPS),
  admission-control goals, and every overhead (context switch, scheduling,
  release), which are 0.
* **Deadlines** are the outcome model's (``sessions.outcomes``): the same
  function gives the 128 band's order here and the miss in the measurement.

SimSo counts time in cycles; ``CYCLES_PER_MS`` cycles make one ms. Every date
is a whole number of ms because every input is, so converting back is exact
(a remainder would be a bug and raises TargetFailure).
"""
from __future__ import annotations

import math

from SimPy.Simulation import hold, passivate
from simso.configuration import Configuration
from simso.core import Model, Scheduler
from simso.core.Job import Job
from simso.core.Task import GenericTask, task_types

from sessions import etm, register
from sessions.base import Session, SessionInfo, TargetFailure
from sessions.events import RawEvent
from sessions.outcomes import kill, relative_deadline

CYCLES_PER_MS = 1000
NO_PRIORITY = 128
TASK_TYPE = "GenodeTask"
# Order of events that share a time stamp: a job ends before the next starts.
_PHASE = {"START": 2, "JOBS_DONE": 1}


class GenodeJob(Job):
    """A SimSo job that knows its Genode rank and records its first dispatch."""

    def __init__(self, task: GenodeTask, name: str):
        super().__init__(task, name, None, monitor=task.monitor, etm=task.sim.etm, sim=task.sim)
        release = task.sim.now()
        # Rank, then the earlier release, then the lower task id.
        self.order = (*task.rank_at(release), release, task.identifier)
        self.first_dispatch: int | None = None
        self.kill_reason: str | None = None

    def _on_execute(self):
        if self.first_dispatch is None:
            self.first_dispatch = self.sim.now()
        super()._on_execute()


class GenodeTask(GenericTask):
    """Releases exactly ``numberofjobs`` jobs and kills them as Genode would.

    Releases and kills happen in this task's own process, not in SimSo timers,
    for their order within one instant: SimPy runs the notices of an instant
    in the order they were posted. This process posted its wake-up at the
    previous release (and a finishing job at its last dispatch), while the
    processor reacts to an instant only from that instant on. So at any ms,
    kills, completions and releases are all settled before anything is
    dispatched, and a job first free to run at its kill is NOT_SCHEDULED
    whatever the event order.
    """

    fields = []

    def __init__(self, sim: Model, task_info):
        super().__init__(sim, task_info)
        self.spec: dict = task_info.data["genode"]
        self._waiting_for_end = False

    def rank_at(self, release: int) -> tuple:
        """(0, priority) for fixed priorities, (1, absolute deadline) for 128."""
        priority = self.spec["priority"]
        if priority != NO_PRIORITY:
            return (0, priority)
        relative = relative_deadline(self.spec)
        return (1, release + relative * CYCLES_PER_MS if relative else math.inf)

    def execute(self):
        self._init()
        spec = self.spec
        yield hold, self, spec["offset"] * CYCLES_PER_MS
        for number in range(spec["numberofjobs"]):
            release = self.sim.now()
            job = self._release(number)
            if spec["period"]:
                yield from self._run_periodic(job, release, last=number == spec["numberofjobs"] - 1)
            else:
                yield from self._run_back_to_back(job)

    def _release(self, number: int) -> GenodeJob:
        job = GenodeJob(self, f"{self.name}_{number}")
        self._job_count += 1
        self._jobs.append(job)
        self.job = job
        self.sim.activate(job, job.activate_job())
        return job

    def _run_periodic(self, job: GenodeJob, release: int, last: bool):
        period = self.spec["period"] * CYCLES_PER_MS
        after, reason = kill(self.spec)  # a periodic task is always killed, at the latest at its period end
        yield hold, self, release + after * CYCLES_PER_MS - self.sim.now()
        yield from self._kill_if_running(job, reason)
        if not last and self.sim.now() < release + period:
            yield hold, self, release + period - self.sim.now()

    def _run_back_to_back(self, job: GenodeJob):
        killed = kill(self.spec)
        self._waiting_for_end = True
        if killed is None:
            yield passivate, self  # until the job ends: end_job wakes it
        else:
            yield hold, self, killed[0] * CYCLES_PER_MS  # or until the job ends, if earlier
        self._waiting_for_end = False
        if killed is not None:
            yield from self._kill_if_running(job, killed[1])

    def _kill_if_running(self, job: GenodeJob, reason: str):
        """At a kill time: kill a job with work left; one that completes at
        this very instant is waited for, so it ends normally and the next job
        is never released beside it."""
        if not job.is_active():
            return
        if self.sim.etm.get_ret(job) > 0:
            job.kill_reason = reason
            self.cancel(job)
            job.abort()
            return
        self._waiting_for_end = True
        yield passivate, self
        self._waiting_for_end = False

    def end_job(self, job: Job) -> None:
        """Called by SimSo when a job ends: wakes a task waiting for it."""
        self._last_cpu = self.cpu
        if self._waiting_for_end and job is self.job:
            self._waiting_for_end = False
            self.sim.reactivate(self)


# SimSo's Model builds every task through this table: its way to plug in a class.
task_types[TASK_TYPE] = GenodeTask


class GenodeScheduler(Scheduler):
    """Genode's policy on one processor: priorities 0..127 first (0 highest),
    then priority-128 tasks by earliest absolute deadline; preemptive."""

    def init(self):
        self.ready: list[GenodeJob] = []

    def on_activate(self, job: GenodeJob) -> None:
        self.ready.append(job)
        job.cpu.resched()

    def on_terminated(self, job: GenodeJob) -> None:
        if job in self.ready:
            self.ready.remove(job)
        job.cpu.resched()

    def schedule(self, cpu):
        """The best of the ready jobs, the running one included. Orders are
        fixed at release and every release of an instant is seen before its
        dispatch, so a running job is never displaced by an equal rank."""
        ready = [job for job in self.ready if job.is_active()]
        if not ready:
            return None
        return (min(ready, key=lambda job: job.order), cpu)


# -- building and reading a simulation ----------------------------------------


def build_configuration(tasks: list[dict], model: etm.ExecutionTimeModel) -> Configuration:
    """The SimSo configuration of a task-set (tasks as from distributor.taskfile)."""
    times = {task["id"]: model.execution_time_ms(task["pkg"], task["arg1"]) for task in tasks}
    config = Configuration()
    config.cycles_per_ms = CYCLES_PER_MS
    config.etm = "wcet"
    config.duration = (horizon_ms(tasks, times) + 1) * CYCLES_PER_MS
    config.scheduler_info.clas = GenodeScheduler
    config.add_processor(name="CPU", identifier=1)
    for task in tasks:
        config.add_task(
            name=f"T{task['id']}", identifier=task["id"], task_type=TASK_TYPE, abort_on_miss=False,
            period=task["period"], activation_date=task["offset"], wcet=times[task["id"]],
            deadline=relative_deadline(task) or 0, data={"genode": task},
        )
    return config


def horizon_ms(tasks: list[dict], times: dict[int, int]) -> int:
    """A time by which every job has ended: the processor only idles before
    the last periodic release or offset, and is busy at most the total work."""
    last_release = max(task["offset"] + task["numberofjobs"] * task["period"] for task in tasks)
    work = sum(task["numberofjobs"] * times[task["id"]] for task in tasks)
    return last_release + work


def simulate(tasks: list[dict], model: etm.ExecutionTimeModel) -> list[RawEvent]:
    """Run the task-set in SimSo, one simulation per core; the events a
    Genode target would send."""
    events = []
    for core in sorted({task["coreoffset"] for task in tasks}):
        simulation = Model(build_configuration([t for t in tasks if t["coreoffset"] == core], model))
        simulation.run_model()
        events += [event for task in simulation.task_list for event in _task_events(task)]
    events.sort(key=lambda event: (event.time_ms, _PHASE.get(event.type, 0), event.task_id))
    return events


def _task_events(task: GenodeTask) -> list[RawEvent]:
    events = []
    for job in task.jobs:
        if job.end_date is None:
            raise TargetFailure(f"SimSo left job {job.name} unfinished at the end of the simulation")
        end = _ms(job.end_date)
        if job.kill_reason and job.first_dispatch is None:
            events.append(RawEvent(task.identifier, "NOT_SCHEDULED", end))
            continue
        events.append(RawEvent(task.identifier, "START", _ms(job.first_dispatch)))
        events.append(RawEvent(task.identifier, job.kill_reason or "EXIT", end))
    events.append(RawEvent(task.identifier, "JOBS_DONE", events[-1].time_ms))
    return events


def _ms(cycles: int) -> int:
    whole, rest = divmod(int(cycles), CYCLES_PER_MS)
    if rest:
        raise TargetFailure(f"SimSo date {cycles} cycles is not a whole ms")
    return whole


# -- the session ---------------------------------------------------------------


@register
class SimsoSession(Session):
    """A target that needs no host: the simulation runs inside ``start``."""

    kind = "simso"
    default_settings = {"etm": "default"}

    def __init__(self, info: SessionInfo):
        super().__init__(info)
        self._etm: etm.ExecutionTimeModel | None = None
        self.pending: list[RawEvent] = []

    @property
    def model(self) -> etm.ExecutionTimeModel:
        """The execution-time model, loaded once; an unreadable one is a
        target that cannot come up, stored on the row like any other."""
        if self._etm is None:
            try:
                self._etm = etm.load(self.settings["etm"])
            except etm.EtmError as error:
                raise TargetFailure(f"settings.etm: {error}") from None
        return self._etm

    def start_host(self) -> None:
        self.model  # noqa: B018 - fail at boot, not at the first task-set

    def start(self, tasks: list[dict], admission: dict | None = None) -> None:
        self.pending = simulate(tasks, self.model)

    def run(self, timeout: float) -> list[RawEvent]:
        events, self.pending = self.pending, []
        return events

    def stop(self) -> None:
        self.pending = []
