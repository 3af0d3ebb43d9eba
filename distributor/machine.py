"""A machine: one long-lived django-q2 task that owns one target.

``run_machine`` is what the reconciler launches in the machines cluster. It
takes its Machine row with a compare-and-set (a duplicate delivery exits at
once), boots its target through its session, then loops: claim a task-set,
run it, keep its events as they arrive (written at least every half second),
and store its result with its last events in one transaction. The claims
and finishes renew the machine's lease with database time and bring back
the operator's stop modes; between them a background *lifeline* thread does
it, so a task-set that runs for minutes keeps its lease and a kill is
noticed within a fraction of a second. On every exit path the
target is taken down. (The reconciler runs in the host's heartbeat thread.)
"""
from __future__ import annotations

import logging
import os
import threading
import time
from logging.handlers import RotatingFileHandler

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.utils import timezone

from distributor.environment import host_environment
from distributor.files import UploadedFiles
from distributor.labels import etm_for, label_tasks
from distributor.models import (Attempt, DistributorConfig, Event, Fenced, HostTargetFault, Job, Machine, Orders, Slot,
                                Task, TaskSet)
from distributor.models.rows import database_time
from distributor.monitors import MonitorGroup
from distributor.queue import Claim, claim_next
from distributor.reconciler import tick
from sessions import EventTracker, HostFault, SessionInfo, Stopped, TargetFailure, TaskSetError, get_session_class
from sessions.etm import EtmError
from sessions.outcomes import expected_span_ms, judge_set

POLL_SECONDS = 0.2  # stop checks and idle claims: the hot path never sleeps longer
RUN_WAIT_SECONDS = 0.25  # one wait on the target
BOOT_TRIES = 3
EVENT_FLUSH_SECONDS = 0.5  # a running task-set's events reach the database at least this often

log = logging.getLogger(__name__)
# Errors of the database's own making, not the statement's: a restart, a
# dropped connection, a cancelled query, a lock or deadlock timeout. A
# statement's own error (IntegrityError, DataError) is not retried.
DATABASE_TROUBLE = (OperationalError, InterfaceError)


def run_machine(machine_id: int) -> str:
    """django-q2 entry point of a machine."""
    close_old_connections()
    machine = Machine.objects.select_related("target").filter(pk=machine_id).first()
    if machine is None:
        return f"machine {machine_id}: no such row"
    if machine.take(os.getpid()) is None:
        return f"machine {machine_id}: already taken (duplicate delivery)"
    try:
        try:
            worker = MachineWorker(machine)
        except Exception as failure:  # noqa: BLE001 - recorded on the row, like a failure once running
            return _not_set_up(machine, failure)
        return worker.run()
    finally:
        connection.close()


def _not_set_up(machine: Machine, failure: Exception) -> str:
    """The machine could not even be set up (its kind's configuration on this
    host, its log folder): it fails with the cause, its log is closed, and a
    host fault is the host's (else the next tick places it here again)."""
    _close_log(logging.getLogger(f"distributor.machine.{machine.pk}"))
    if isinstance(failure, HostFault):
        HostTargetFault.record(machine.host, machine.target, str(failure))
        error = f"this host cannot run the target: {failure}"
        log.error("machine %s: %s", machine.pk, error)
    else:
        error = f"setting up the machine failed: {_describe(failure)}"
        log.exception("machine %s: %s", machine.pk, error)
    machine.stop(Machine.State.FAILED, error)
    return f"machine {machine.pk}: failed {error}"


class Lifeline(threading.Thread):
    """Heartbeat and stop flags, apart from the work so that neither waits.

    While task-sets come and go quickly the work's own statements renew the
    lease and read the operator's orders (every claim and finish does), and
    the lifeline only listens (``heard``); it beats and reads the flags
    itself when the work has said nothing for a poll interval (a long
    task-set, an idle machine), so a kill is noticed within a fraction of a
    second either way."""

    def __init__(self, machine: Machine, config: DistributorConfig, stop_event: threading.Event,
                 machine_log: logging.Logger = log):
        super().__init__(name=f"lifeline-{machine.pk}", daemon=True)
        self.machine = machine
        self.log = machine_log
        self.stop_event = stop_event  # set: stop now (kill, or lease lost)
        self.drain = False
        self.reboot = False
        self.fenced = False
        self.cancel: int | None = None  # a task-set whose job was cancelled now
        self.done = threading.Event()
        # Held while orders are read and obeyed, and while a reboot clears its
        # request: a read that began before the clear cannot ask for it again.
        self.lock = threading.Lock()
        self.beat_every = max(0.2, min(2.0, config.heartbeat_timeout_s / 5))
        self.heard_at = float("-inf")  # when the work last renewed the lease and read the orders
        self.read_at = self.beat_at = float("-inf")  # when the lifeline itself last did
        self.beat_ok_at = time.monotonic()  # when the lease was last renewed by the lifeline
        self.fence_after = config.heartbeat_timeout_s / 2  # without a renewal: stop before being declared dead
        self.retry_in = POLL_SECONDS  # after a database error; doubles up to beat_every

    def heard(self, orders: Orders) -> None:
        """The work's statement renewed the lease and brought these orders."""
        self.heard_at = time.monotonic()
        self._obey(orders)

    def run(self) -> None:
        """Reads the orders whenever they are POLL_SECONDS old (so a kill waits
        no longer than that) and beats when the lease is ``beat_every`` old,
        counting what the work heard. A database error (a restart, a dropped
        connection, a cancelled query) is retried on a fresh connection; a
        lifeline that has not renewed the lease for half the heartbeat timeout
        stops its machine before the reconciler can declare it dead, so the
        slot is never the work of two machines."""
        try:
            while not self.done.wait(self.seconds_to_next_read()):
                if self.seconds_to_next_read() > 0:
                    continue  # the work heard them in the meantime
                try:
                    self._listen()
                except DatabaseError as error:
                    self._lost_touch(error)
        finally:
            connection.close()

    def _listen(self) -> None:
        now = time.monotonic()
        if now - max(self.heard_at, self.beat_at) >= self.beat_every:
            self._beat()
            self.beat_at = self.beat_ok_at = now
        self._read_orders()
        self.read_at = now
        self.retry_in = POLL_SECONDS

    def _lost_touch(self, error: DatabaseError) -> None:
        """Log, drop the connection (the next statement opens a new one), back
        off, and fence the machine once the lease may soon look dead."""
        connection.close()
        silent = time.monotonic() - max(self.heard_at, self.beat_ok_at)
        if silent >= self.fence_after:
            self.log.error("machine %s: no heartbeat for %.1f s (%s): stopping before it is declared dead",
                           self.machine.pk, silent, _describe(error))
            self.fenced = True
            self.stop_event.set()
            self.done.set()
            return
        self.log.warning("machine %s: heartbeat failed (%s); again in %.1f s", self.machine.pk, _describe(error), self.retry_in)
        self.done.wait(self.retry_in)
        self.retry_in = min(self.retry_in * 2, self.beat_every)

    def seconds_to_next_read(self) -> float:
        """0 when the newest orders, the work's or its own, are POLL_SECONDS old."""
        return max(0.0, max(self.heard_at, self.read_at) + POLL_SECONDS - time.monotonic())

    def _beat(self) -> None:
        if not self.machine.beat():
            self.fenced = True
            self.stop_event.set()

    def _read_orders(self) -> None:
        with self.lock:
            orders = self.machine.orders()
            if orders:
                self._obey(orders)

    def _obey(self, orders: Orders) -> None:
        self.drain = orders.stop_mode == Machine.StopMode.DRAIN
        self.reboot = bool(orders.reboot)
        self.cancel = orders.cancel
        if orders.stop_mode == Machine.StopMode.KILL:
            self.stop_event.set()


class MachineWorker:
    def __init__(self, machine: Machine):
        self.machine = machine
        self.config = DistributorConfig.get()
        self.log = _machine_log(machine)
        self.stop_event = threading.Event()
        self.lifeline = Lifeline(machine, self.config, self.stop_event, self.log)
        target = machine.target
        self.etm = self._load_etm(target)
        self.info = SessionInfo(
            machine_id=machine.pk,
            slot=machine.slot,
            address=machine.address,
            settings={**target.settings, "etm": self.etm.document} if self.etm else target.settings,
            log=self.log,
            console_path=settings.DATA_DIR / "consoles" / f"{target.name}-{machine.slot}.log",
            console_max_bytes=settings.CONSOLE_MAX_BYTES,
            stop_event=self.stop_event,
            target_timeout=float(self.config.target_timeout_s),
            files=UploadedFiles(),
            host=host_environment(),
        )
        self.info.console_path.parent.mkdir(parents=True, exist_ok=True)
        self.session = get_session_class(target.kind)(self.info)
        self.went_idle = False
        # Its slot's streak of target failures, read once: a finish ends it.
        self.slot_suspect = Slot.objects.filter(target=target, index=machine.slot, failures_in_a_row__gt=0).exists()
        # A probe of a host fault (HostTargetFault, read once): a finish lifts it.
        self.host_faulty = HostTargetFault.objects.filter(host=machine.host, target=target).exists()
        self.reboot_due = False  # the pool reboots its targets between every two task-sets

    # -- the life of a machine ------------------------------------------------

    def run(self) -> str:
        self.log.info("machine %s taken by pid %s on %s", self.machine.pk, os.getpid(), self.machine.host)
        self.lifeline.start()
        final, error = Machine.State.STOPPED, ""
        try:
            if self.machine.health_check:
                self._health_check()
            else:
                self._boot()
            self._work()
        except Stopped:
            self.log.info("stopped %s", "with its lease in doubt" if self.lifeline.fenced else "by the operator")
        except OutOfService as out:
            error = str(out)
            self.went_idle = True  # the reconciler places its work elsewhere at once
            self.log.warning("%s", out)
        except Fenced as fenced:
            final, error = None, str(fenced)
            self.log.warning("lease lost: %s", fenced)
        except HostFault as fault:
            final, error = Machine.State.FAILED, f"this host cannot run the target: {fault}"
            self.log.error("%s", error)
            self.went_idle = True  # its task-set is back in the queue: another host's machine is wanted now
        except Exception as crash:  # noqa: BLE001 - recorded on the row, shown in the UI
            final, error = Machine.State.FAILED, _describe(crash)
            self.log.exception("machine failed")
        finally:
            self.lifeline.done.set()
            self.lifeline.join(timeout=5)
            if self.lifeline.fenced:
                self._abandon_target()
            else:
                self._take_down_target()
            if final is not None and not self.lifeline.fenced:
                self._record_stop(final, error)
            _close_log(self.log)
        return f"machine {self.machine.pk}: {final or 'fenced'} {error}".strip()

    def _record_stop(self, final: str, error: str) -> None:
        try:
            # A clean stop keeps the last error seen (a target failure) for the operator.
            self._until_database_answers(lambda: self.machine.stop(final, error))
        except DATABASE_TROUBLE as trouble:  # the reconciler declares it dead in time
            self.log.error("recording the machine's stop failed: %s", _describe(trouble))
            return
        if self.went_idle:
            self._hand_over()

    def _hand_over(self) -> None:
        """Work may have arrived after the last claim, while the reconciler still
        counted this machine as live: reconcile now so that it is not stranded."""
        try:
            tick()
        except Exception:  # noqa: BLE001 - the host's reconciler will try again
            self.log.exception("reconciling after going idle failed")

    def _work(self) -> None:
        idle_since = None
        while not self._should_stop():
            if self.lifeline.reboot or self.reboot_due:
                self._reboot("the operator asked for it" if self.lifeline.reboot else "the pool reboots after every task-set")
            claim = self._claim()
            if claim is not None:
                idle_since = None
                self.lifeline.heard(claim.orders)
                self._run(claim)
                continue
            if idle_since is None:
                idle_since = time.monotonic()
                self.machine.idle("waiting for work")
            elif time.monotonic() - idle_since > self.config.idle_timeout_s:
                self.log.info("no work for %s s: stopping", self.config.idle_timeout_s)
                self.went_idle = True
                return
            self.stop_event.wait(POLL_SECONDS)
        self.info.check_stop()  # a kill raises Stopped; a drain returns

    def _claim(self) -> Claim | None:
        """The next task-set. A database error is retried on new connections
        (the lifeline stops the machine if the database stays away); a claim
        whose commit went through unheard is put back first."""
        _drop_broken_connection()
        try:
            return claim_next(self.machine)
        except DATABASE_TROUBLE as trouble:
            self.log.warning("claiming a task-set failed: %s", _describe(trouble))
            connection.close()
            return self._until_database_answers(self._claim_again)

    def _claim_again(self) -> Claim | None:
        for unrun in TaskSet.objects.filter(machine=self.machine, state=TaskSet.State.RUNNING).select_related("job"):
            unrun.put_back(self.machine)  # this machine runs nothing between two task-sets
        return claim_next(self.machine)

    def _should_stop(self) -> bool:
        if self.lifeline.fenced:
            raise Fenced(f"machine {self.machine.pk} was declared dead")
        return self.stop_event.is_set() or self.lifeline.drain

    # -- the target -------------------------------------------------------------

    def _host_fault(self, fault: HostFault) -> None:
        """This host cannot run this target: the reconciler places the target's
        machines elsewhere, and probes this host again later."""
        HostTargetFault.record(self.machine.host, self.machine.target, str(fault))

    def _host_mended(self) -> None:
        """A task-set (or a health check) ran here: this host can run the target."""
        if self.host_faulty:
            if HostTargetFault.lift(self.machine.host, self.machine.target_id):
                self.log.info("host %s runs target %s again: its fault is lifted", self.machine.host,
                              self.machine.target.name)
            self.host_faulty = False

    def _boot(self) -> None:
        """Start the target, retrying with a short back-off; no fixed delays."""
        for attempt in range(1, BOOT_TRIES + 1):
            self.info.check_stop()
            self.machine.starting(f"starting target (try {attempt})")
            try:
                self.session.start_host()
            except HostFault as fault:
                self._host_fault(fault)
                raise
            except (TargetFailure, OSError) as failure:
                self.log.warning("target start failed (try %d): %s", attempt, failure)
                self.machine.starting(last_error=f"target start failed: {failure}")
                self._take_down_target()
                if attempt == BOOT_TRIES:
                    if not self.machine.health_check:  # a check's failure is the check's to record
                        Slot.record_failure(self.machine.target, self.machine.slot, f"target did not start: {failure}")
                    raise TargetFailure(f"target did not start after {BOOT_TRIES} tries: {failure}") from failure
                self.stop_event.wait(min(2 ** (attempt - 1), 5))
                continue
            self.machine.booted()
            self.machine.idle("target ready")
            self.log.info("target ready")
            return

    def _take_down_target(self) -> None:
        for step in (self.session.close, self.session.stop_host):
            try:
                step()
            except Exception:  # noqa: BLE001 - keep cleaning up
                self.log.exception("cleaning up the target: %s failed", step.__name__)

    def _abandon_target(self) -> None:
        """Fenced: the slot may be another machine's already, so no power-off
        and no tap deleted under it; only what is this process's own goes."""
        try:
            self.session.abandon()
        except Exception:  # noqa: BLE001 - the machine is on its way out
            self.log.exception("cleaning up the abandoned target failed")

    def _restart_target(self, cause: str) -> None:
        self.log.info("restarting the target after: %s", cause)
        self._take_down_target()
        self._boot()

    def _reboot(self, why: str) -> None:
        """Reboot the target between two task-sets (the session's own way:
        REBOOT, a power cycle, a fresh guest); one that does not come back
        is restarted like a failed target."""
        with self.lifeline.lock:
            self.machine.rebooting()
            self.lifeline.reboot = False
        self.reboot_due = False
        self.log.info("rebooting the target: %s", why)
        self.machine.starting(f"rebooting the target: {why}"[:200])
        try:
            self.session.reboot()
        except HostFault as fault:  # as in _boot: marked here, or the next tick places a machine here again
            self._host_fault(fault)
            raise
        except (TargetFailure, OSError) as failure:
            self.log.warning("reboot failed: %s", failure)
            self.machine.starting(last_error=f"reboot failed: {failure}"[:4000])
            self._restart_target(f"reboot failed: {failure}")
            return
        self.machine.booted()
        self.machine.idle("target rebooted")

    # -- the slot's health check ------------------------------------------------------

    def _health_check(self) -> None:
        """Boot the quarantined slot's target and run its pool's health check
        (a small task-set known to pass): passed, the slot is healthy and this
        machine goes on to work; failed, the next check waits longer."""
        target, index = self.machine.target, self.machine.slot
        try:
            self._boot()
            tasks = self._health_check_tasks()
            if tasks:
                self.machine.idle("running the health check")
                self._run_check(tasks)
        except (Stopped, Fenced):
            raise
        except HostFault as fault:  # this host's fault, not the slot's: the check is not failed
            self._host_fault(fault)
            raise
        except Exception as failure:  # noqa: BLE001 - any failure fails the check
            cause = _describe(failure)
            Slot.check_failed(target, index, cause)
            raise OutOfService(f"health check of {target.name}:{index} failed: {cause}") from None
        Slot.check_passed(target, index)
        self.slot_suspect = False
        self._host_mended()
        self.log.info("health check passed: slot %s:%s back in service", target.name, index)
        self.machine.idle("health check passed")

    def _health_check_tasks(self) -> list[dict] | None:
        """The pool's configured check, else the last task-set that finished on
        the pool (it passed there); None when there is neither: booting and
        answering is then the whole check."""
        target = self.machine.target
        tasks = target.health_check_tasks()
        if tasks is not None:
            return tasks
        last = (Attempt.objects.filter(result=Attempt.Result.FINISHED, machine__target=target)
                .order_by("-pk").values_list("taskset_id", flat=True).first())
        return [task.as_dict() for task in Task.objects.filter(taskset_id=last)] if last else None

    def _run_check(self, tasks: list[dict]) -> None:
        self.session.start(tasks)
        tracker = EventTracker(tasks)
        last_heard = time.monotonic()
        while not tracker.finished:
            self.info.check_stop()
            received = self.session.run(RUN_WAIT_SECONDS)
            if received:
                last_heard = time.monotonic()
                tracker.feed(received)
            elif time.monotonic() - last_heard > self.info.target_timeout:
                raise TargetFailure(f"target silent for {self.info.target_timeout:g} s")
        self.session.stop()

    # -- one task-set -------------------------------------------------------------

    def _run(self, claim: Claim) -> None:
        monitors = MonitorGroup(claim.taskset.job.monitors, self.log)
        try:
            self._attempt(claim, monitors)
        except DATABASE_TROUBLE as trouble:
            self._database_trouble(claim.taskset, trouble, monitors)

    def _attempt(self, claim: Claim, monitors: MonitorGroup) -> None:
        taskset, tasks = claim.taskset, claim.tasks
        monitors.taskset_start(taskset, tasks)
        self.log.info("task-set %s (job %s variant %s, run %s)", taskset.pk, taskset.job_id, taskset.variant, taskset.runs)
        events = EventBuffer(taskset)
        self.info.files.for_job(taskset.job_id)  # the binaries and boot images its job names
        try:
            tracker = self._execute(taskset, tasks, events, monitors)
        except (Stopped, Fenced):
            if taskset.put_back(self.machine):  # its events go with it: the task-set starts afresh
                monitors.taskset_stop(taskset)
            raise
        except BootAgain as why:
            if taskset.put_back(self.machine):  # not started: it runs once the target has the job's images
                monitors.taskset_stop(taskset)
            self._reboot(str(why))
            return
        except HostFault as fault:
            # Recorded before the task-set is back, so no tick places it on this host again.
            self._host_fault(fault)
            if taskset.put_back(self.machine):  # no try used: neither the task-set's fault nor the target's
                monitors.taskset_stop(taskset)
            raise
        except Cancelled:
            self._cancel(taskset, events, monitors)
            return
        except TaskSetError as error:
            self._fail(taskset, tasks, str(error), events, monitors, final=True)
            return
        except DATABASE_TROUBLE:
            raise  # the database's trouble, not the target's: _run puts the task-set back
        except Exception as failure:  # noqa: BLE001 - any session error is a target failure
            self._fail(taskset, tasks, _describe(failure), events, monitors)
            return
        self._finish(claim, tracker, events, monitors)

    def _database_trouble(self, taskset: TaskSet, trouble: Exception, monitors: MonitorGroup) -> None:
        """A statement failed for the database's sake (a restart, a dropped
        connection, a lock or deadlock timeout): neither the target's fault
        nor the task-set's. The target stops the set and the set goes back
        untouched, its events so far deleted: no try used, no slot failure.
        A target that does not stop is restarted, as after a cancel."""
        self.log.warning("task-set %s goes back to the queue: database error: %s", taskset.pk, _describe(trouble))
        connection.close()  # it may be dead: the next statement opens a new one
        try:
            self.session.stop()
            stopped = None
        except Exception as failure:  # noqa: BLE001 - any session error is a target failure
            stopped = f"stopping a task-set after a database error failed: {_describe(failure)}"
        if self._until_database_answers(lambda: taskset.put_back(self.machine)):
            monitors.taskset_stop(taskset)
        else:  # ended already (its finish went through before the error), or taken away: the next claim says which
            self.log.info("task-set %s was no longer running here", taskset.pk)
        if stopped:
            self.machine.starting(last_error=stopped[:4000])
            self._restart_target(stopped)

    def _until_database_answers(self, statement):
        """Run ``statement`` on a fresh connection until it goes through, for
        at most half the heartbeat timeout (the lifeline fences the machine by
        then if the database is gone); then its error is the machine's."""
        give_up_at = time.monotonic() + self.config.heartbeat_timeout_s / 2
        wait = POLL_SECONDS
        while True:
            try:
                return statement()
            except DATABASE_TROUBLE as trouble:
                connection.close()  # the next statement opens a new connection
                if self.lifeline.fenced or time.monotonic() + wait > give_up_at:
                    raise
                self.log.warning("database error (%s): again in %.1f s", _describe(trouble), wait)
                time.sleep(wait)  # not stop_event: a kill must not turn this into a busy loop
                wait = min(wait * 2, 2.0)

    def _execute(self, taskset: TaskSet, tasks: list[dict], events: EventBuffer, monitors: MonitorGroup) -> EventTracker:
        images = self.info.files.images_to_boot()
        if images:
            raise BootAgain(f"job {taskset.job_id} runs other content for boot image {', '.join(images)}")
        self.session.start(tasks, admission=taskset.job.admission)
        tracker = EventTracker(tasks)
        limit, why = time_limit(taskset.job, tasks)
        last_heard = started = time.monotonic()
        while not tracker.finished:
            self.info.check_stop()
            if self.lifeline.cancel == taskset.pk:
                raise Cancelled(taskset.pk)
            if limit is not None and time.monotonic() - started > limit:
                raise TargetFailure(f"task-set still running after its wall-clock limit of {limit:g} s ({why})")
            received = self.session.run(RUN_WAIT_SECONDS)
            if not received:
                if time.monotonic() - last_heard > self.info.target_timeout:
                    raise TargetFailure(f"target silent for {self.info.target_timeout:g} s")
                continue
            last_heard = time.monotonic()
            events.add(received)
            monitors.taskset_event(taskset, received)
            tracker.feed(received)
        self.session.stop()
        return tracker

    def _finish(self, claim: Claim, tracker: EventTracker, events: EventBuffer, monitors: MonitorGroup) -> None:
        taskset, task_pks = claim.taskset, claim.task_pks
        jobs = tracker.all_jobs()
        rows = [
            (taskset.pk, task_pks[job.task_id], job.job_number, job.release_ms, job.start_ms, job.end_ms, job.exit_type,
             job.deadline_abs_ms, job.deadline_met)
            for job in jobs
        ]
        result = judge_set(jobs)  # the jobs just listed, not a second walk of the tracker
        orders = taskset.finish(self.machine, result.outcome.value, rows, events.take(),
                                analysis=self._analyse(claim.tasks), first_miss=result.first_miss)
        if orders is None:
            raise Fenced(f"task-set {taskset.pk} was taken away before it finished")
        self.lifeline.heard(orders)
        monitors.taskset_finish(taskset)
        self.reboot_due = self.machine.target.reboot_every_taskset
        if self.slot_suspect:
            Slot.record_success(self.machine.target, self.machine.slot)
            self.slot_suspect = False
        self._host_mended()

    def _fail(self, taskset: TaskSet, tasks: list[dict], cause: str, events: EventBuffer, monitors: MonitorGroup,
              final: bool = False) -> None:
        """A target failure restarts the target and retries; a task-set error
        (``final``) is bad at once and the target carries on. The attempt's
        events are kept as evidence; a task-set that ends bad keeps its
        labels (computed here, where tasks and model are at hand: 0.4 ms
        beside a target restart)."""
        self.log.warning("task-set %s failed: %s", taskset.pk, cause)
        events.flush()
        analysis = self._analyse(tasks)
        # One transaction: a task-set taken away (its machine declared dead)
        # leaves no failure on the slot, which may be its next machine's now.
        with transaction.atomic():
            slot = None if final else Slot.record_failure(self.machine.target, self.machine.slot, cause, taskset.pk)
            out_of_service = slot is not None and slot.health in Slot.OUT_OF_SERVICE
            state = taskset.fail(self.machine, cause, final=final, analysis=analysis,
                                 slot_out_of_service=out_of_service)
            if state is None:
                raise Fenced(f"task-set {taskset.pk} was taken away")
        if state == TaskSet.State.BAD:
            monitors.taskset_bad(taskset)
        if final:
            self.machine.idle(last_error=cause[:4000])
            return
        self.slot_suspect = True
        if out_of_service:
            if slot.failing_since:
                TaskSet.forgive_slot_failures(Machine.objects.filter(target=self.machine.target, slot=slot.index),
                                              slot.failing_since)
            raise OutOfService(f"slot {self.machine.target.name}:{slot.index} {slot.health}: {slot.cause}")
        self.machine.starting(last_error=cause[:4000])
        self._restart_target(cause)

    def _cancel(self, taskset: TaskSet, events: EventBuffer, monitors: MonitorGroup) -> None:
        """Its job was cancelled now: the task-set ends cancelled (its events
        so far stay with the attempt) and is stopped on the target, which
        stays up; a target that fails to stop is restarted."""
        self.log.info("task-set %s stopped: its job was cancelled", taskset.pk)
        events.flush()
        if not taskset.end_cancelled(self.machine):
            raise Fenced(f"task-set {taskset.pk} was taken away")
        monitors.taskset_stop(taskset)
        try:
            self.session.stop()
        except Exception as failure:  # noqa: BLE001 - any session error is a target failure
            cause = f"stopping a cancelled task-set failed: {_describe(failure)}"
            self.machine.starting(last_error=cause[:4000])
            self._restart_target(cause)
            return
        self.machine.idle("its job was cancelled")

    def _load_etm(self, target):
        """The target's execution-time model, resolved from the database once
        per machine: the session simulates with it (SimSo gets the model
        itself, never a name or a host's path) and the labels record it.
        None when it cannot be loaded (logged): labels never stop a result,
        and a SimSo session then fails at boot naming settings.etm."""
        try:
            return etm_for(target)
        except EtmError as error:
            self.log.warning("no analytic labels: execution-time model: %s", error)
            return None

    def _analyse(self, tasks: list[dict]) -> dict | None:
        """Analytic labels beside the measured outcome, from the target's model."""
        return label_tasks(tasks, self.etm) if self.etm else None


class OutOfService(Exception):
    """The machine's slot is quarantined (or its health check failed): it stops."""


class BootAgain(Exception):
    """The target booted other boot images than the claimed task-set's job names
    (one was uploaded again since either was submitted)."""


class Cancelled(Exception):
    """The running task-set's job was cancelled now (``Lifeline.cancel``)."""


class EventBuffer:
    """A task-set's raw events on their way to the database: written at least
    every EVENT_FLUSH_SECONDS while it runs, so the task-set page follows a
    long run, and the rest with the result, in the transaction that finishes
    it, so a target that answers in milliseconds costs one write, not one per
    message."""

    def __init__(self, taskset: TaskSet):
        self.taskset_id, self.attempt = taskset.pk, taskset.runs
        self.rows: list[tuple] = []
        self.seq = 0
        self.flushed_at = time.monotonic()

    def add(self, events: list) -> None:
        received = database_time(timezone.now())
        self.rows.extend(
            (self.taskset_id, self.attempt, self.seq + i, e.task_id, e.type[:16], e.time_ms, received)
            for i, e in enumerate(events)
        )
        self.seq += len(events)
        if time.monotonic() - self.flushed_at >= EVENT_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        Event.store(self.take())
        self.flushed_at = time.monotonic()

    def take(self) -> list[tuple]:
        rows, self.rows = self.rows, []
        return rows


def time_limit(job: Job, tasks: list[dict]) -> tuple[float | None, str]:
    """How long a task-set may run once started, in seconds, and where that
    comes from: the job's own ``time_limit_s``, else its task model's span
    times TASKSET_TIME_FACTOR plus TASKSET_TIME_MARGIN_S. None when the model
    has no bound (back-to-back jobs without deadline or kill time): then
    only the target's silence (target_timeout) ends it."""
    if job.time_limit_s:
        return float(job.time_limit_s), "the job's time_limit"
    span_ms = expected_span_ms(tasks)
    if span_ms is None:
        return None, ""
    factor, margin = settings.TASKSET_TIME_FACTOR, settings.TASKSET_TIME_MARGIN_S
    return span_ms / 1000 * factor + margin, f"its task model's {span_ms / 1000:g} s × {factor} + {margin} s"


def _drop_broken_connection() -> None:
    """A database error caught on the way (a monitor's, a reconcile's) may
    have left the connection dead: the next statement opens a new one. Not
    close_old_connections(), which with CONN_MAX_AGE 0 would reconnect for
    every task-set."""
    if connection.errors_occurred:
        connection.close()


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, TargetFailure) else f"{type(error).__name__}: {text}"


def _machine_log(machine: Machine) -> logging.Logger:
    """One rotated log per pool slot, so a machine's history reads in one file."""
    folder = settings.LOG_DIR / "machines"
    folder.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"distributor.machine.{machine.pk}")
    handler = RotatingFileHandler(folder / f"{machine.target.name}-{machine.slot}.log", maxBytes=5 * 2**20, backupCount=3)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s machine {machine.pk}: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _close_log(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)

