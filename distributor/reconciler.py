"""The reconciler (``tick``) and the operator's controls.

``tick`` compares what the operator wants with what runs: it declares machines
with a stale heartbeat dead and puts their task-sets back in the queue, runs
the steps others registered (campaigns queue their next level), drains the
surplus when the maximum was lowered (highest ids first), and launches
machines while fewer run than the maximum and there is work. It is a plain
idempotent function: every operator action calls it, whoever adds work calls
``wake()`` after commit, every host's heartbeat calls it now and then, and a
django-q2 schedule calls it every minute. Concurrent ticks are serialised by a
row lock on the settings row.

It sits at the top of ``distributor/``: the queue, the models and the
campaigns' services never import it (``docs/architecture.md``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django_q.tasks import async_task

from distributor import summaries
from distributor.audit import record
from distributor.environment import host_environment
from distributor.labels import label_stored
from distributor.models import DistributorConfig, Host, HostTargetFault, Job, Machine, Slot, Target, TaskSet
from distributor.models.hosts import seconds_ago
from sessions import get_session_class

log = logging.getLogger("distributor")
STEPS: list[Callable[[], object]] = []  # run by every tick before it launches (add_step)


def add_step(step: Callable[[], object]) -> None:
    """Have every tick call ``step()`` (once per function) before it drains and
    launches, so that work the step queues gets machines in the same tick. A
    step must not call ``wake``: it already runs inside a tick."""
    if step not in STEPS:
        STEPS.append(step)


def wake() -> None:
    """Reconcile once the caller's transaction commits (at once outside one):
    what a submission, a resubmission or a requeue just stored is seen. A wake
    from inside a tick (a campaign step submitting its next level) does
    nothing: that tick launches after its steps anyway."""
    transaction.on_commit(_tick_unless_ticking)


_ticking = threading.local()


def _tick_unless_ticking() -> None:
    if not getattr(_ticking, "now", False):
        tick()


def tick() -> dict:
    """Reconcile once; returns what it did (for logs, tests and the CLI)."""
    config = DistributorConfig.get()
    dead = reap_dead_machines(config)
    _end_done_jobs()
    summaries.queue_ended_jobs()  # a job's results page is fast from the first view after its end
    _ticking.now = True
    try:
        for step in STEPS:
            step()
    finally:
        _ticking.now = False
    with transaction.atomic():
        config = DistributorConfig.objects.select_for_update().get(pk=config.pk)
        drained = _drain_out_of_service() + _drain_surplus(config)
        launched = _launch(config)
    if dead or drained or launched:
        log.info("tick: dead %s, draining %s, launched %s", dead, drained, launched)
    return {"dead": dead, "draining": drained, "launched": launched}


# -- dead machines --------------------------------------------------------------


def reap_dead_machines(config: DistributorConfig) -> list[int]:
    stale = Q(state__in=[Machine.State.STARTING, Machine.State.IDLE, Machine.State.BUSY],
              heartbeat_at__lt=seconds_ago(config.heartbeat_timeout_s))
    lost_launch = Q(state=Machine.State.LAUNCHING, launched_at__lt=seconds_ago(config.launch_timeout_s))
    silent_hosts = set(Host.objects.exclude(heartbeat_at__gte=seconds_ago(config.heartbeat_timeout_s))
                       .values_list("name", flat=True))
    on_silent_host = Q(state__in=Machine.LIVE_STATES, host__in=silent_hosts)
    dead = []
    for machine in Machine.objects.filter(stale | lost_launch | on_silent_host).select_related("target"):
        if machine.host in silent_hosts:
            reason, still = f"machine {machine.pk}: its host {machine.host} went silent", on_silent_host
        elif machine.state == Machine.State.LAUNCHING:
            reason, still = f"machine {machine.pk} was never picked up by a worker", lost_launch
        else:
            reason, still = f"machine {machine.pk} stopped beating (no heartbeat for {config.heartbeat_timeout_s} s)", stale
        if _declare_dead(machine, reason, still):
            dead.append(machine.pk)
    _recover_orphans()
    return dead


def _recover_orphans() -> None:
    """A task-set still running on a machine that ended (one that crashed on an
    unexpected error, say a database error while storing a result) goes back to
    the queue as if its machine had died: nothing else would ever end it."""
    orphans = TaskSet.objects.filter(state=TaskSet.State.RUNNING).exclude(machine__state__in=Machine.LIVE_STATES)
    for taskset in orphans.select_related("job", "machine"):
        machine = taskset.machine
        reason = f"machine {machine.pk} ended ({machine.state}) while running it" if machine else "its machine is gone"
        if taskset.recover_from_dead_machine(machine, reason, labeller=label_stored):
            log.warning("task-set %s: %s; back in the queue", taskset.pk, reason)


def _end_done_jobs() -> None:
    """Machines end a job when they look for work after its last result; this
    ends one whose last task-set was called bad by the reconciler, or whose
    machine stopped between storing the last result and looking again."""
    for job_id in Job.objects.filter(state__in=Job.ACTIVE_STATES, cursor__gte=F("variant_count")).values_list(
        "pk", flat=True
    ):
        Job(pk=job_id).end_if_done()  # its id is all it needs: no counts summed for it


def _declare_dead(machine: Machine, reason: str, still_dead: Q) -> bool:
    """Compare-and-set: only if the machine is still as dead as it looked."""
    with transaction.atomic():
        if not Machine.declare_dead(machine.pk, still_dead, reason):
            return False  # it beat, or another tick was quicker
        for taskset in TaskSet.objects.filter(machine=machine, state=TaskSet.State.RUNNING).select_related("job"):
            taskset.recover_from_dead_machine(machine, reason, labeller=label_stored)
    try:
        get_session_class(machine.target.kind).reap(machine, host_environment())
    except Exception:  # noqa: BLE001 - cleaning up after the dead must not stop the tick
        log.exception("cleaning up after dead machine %s", machine.pk)
    return True


# -- draining and launching -----------------------------------------------------


def _drain_surplus(config: DistributorConfig) -> list[int]:
    wanted = 0 if config.halted else config.max_machines
    running = Machine.objects.filter(state__in=Machine.LIVE_STATES, stop_mode=Machine.StopMode.NONE).order_by("-pk")
    surplus = list(running.values_list("pk", flat=True)[: max(running.count() - wanted, 0)])
    if surplus:
        Machine.cancel_launches(Machine.objects.filter(pk__in=surplus), "drained before start")
        Machine.order(Machine.objects.filter(pk__in=surplus), Machine.StopMode.DRAIN)
    return surplus


def _drain_out_of_service() -> list[int]:
    """Machines on a slot in quarantine or maintenance finish their task-set
    and stop (a health check's machine runs on: the slot's way back)."""
    drained = []
    for slot in Slot.objects.filter(health__in=Slot.OUT_OF_SERVICE):
        machines = Machine.objects.filter(target_id=slot.target_id, slot=slot.index, health_check=False,
                                          state__in=Machine.LIVE_STATES, stop_mode=Machine.StopMode.NONE)
        pks = list(machines.values_list("pk", flat=True))
        if pks:
            Machine.cancel_launches(Machine.objects.filter(pk__in=pks), f"slot {slot.health}")
            Machine.order(Machine.objects.filter(pk__in=pks), Machine.StopMode.DRAIN)
            drained += pks
    return drained


def _launch(config: DistributorConfig) -> list[int]:
    if config.halted:
        return []
    room = config.max_machines - Machine.objects.filter(state__in=Machine.LIVE_STATES).count()
    hosts = HostLoad(config)
    launched = _launch_health_checks(room, hosts)
    room -= len(launched)
    for target in _targets_with_work():
        if room <= 0:
            break
        for slot in _free_slots(target, min(room, _unmet_demand(target))):
            host = hosts.pick(target)
            if host is None:
                break  # no live host with a free worker may run this pool
            machine = _create_machine(target, slot, host)
            if machine:
                hosts.add(host)
                launched.append(machine.pk)
                room -= 1
    return launched


def _launch_health_checks(room: int, hosts: "HostLoad") -> list[int]:
    """A machine for each quarantined slot whose health check is due, if
    there is room and a host for it; ``Slot.check_due`` pushes the next one
    out, so a check whose machine never reports is tried again later."""
    launched = []
    for slot in Slot.due_for_check():
        if len(launched) >= room:
            break
        if Machine.objects.filter(target_id=slot.target_id, slot=slot.index, state__in=Machine.LIVE_STATES).exists():
            continue  # its last machine is still draining
        host = hosts.pick(slot.target)
        if host is None or not Slot.check_due(slot.target, slot.index):
            continue
        machine = _create_machine(slot.target, slot.index, host, health_check=True)
        if machine:
            hosts.add(host)
            launched.append(machine.pk)
    return launched


class HostLoad:
    """Live hosts and their free workers: machines go where there is room, on
    hosts the operator has not drained and that can run their target (no
    HostTargetFault for the pair, or one due for a retry: one probe at a time)."""

    def __init__(self, config: DistributorConfig):
        live = Host.live(config.heartbeat_timeout_s).filter(drained=False)
        self.capacity = {host.name: host.capacity for host in live}
        self.load = {name: 0 for name in self.capacity}
        for host in Machine.objects.filter(state__in=Machine.LIVE_STATES, host__in=self.capacity).values_list("host", flat=True):
            self.load[host] += 1
        self.faulty, self.blocked = HostTargetFault.pairs()

    def pick(self, target: Target) -> str | None:
        """The allowed host with the most free workers (a pool may be bound to one host)."""
        free = {name: self.capacity[name] - self.load[name] for name in self.capacity
                if (not target.host or target.host == name) and self.load[name] < self.capacity[name]
                and (name, target.pk) not in self.blocked}
        for name in sorted(free, key=lambda name: (-free[name], name)):
            if (name, target.pk) not in self.faulty:
                return name
            self.blocked.add((name, target.pk))  # one probe per tick, and none once another claimed it
            if HostTargetFault.retry_due(name, target):
                return name
        return None

    def add(self, host: str) -> None:
        self.load[host] += 1


def _targets_with_work() -> list[Target]:
    """Targets of active jobs, the oldest (highest priority) job's first."""
    seen, targets = set(), []
    for job in Job.objects.filter(state__in=Job.ACTIVE_STATES).order_by("-priority", "pk").select_related("target"):
        if job.target_id not in seen:
            seen.add(job.target_id)
            targets.append(job.target)
    return targets


def _unmet_demand(target: Target) -> int:
    """Task-sets nobody runs yet, less machines that will take them soon."""
    jobs = Job.objects.filter(target=target, state__in=Job.ACTIVE_STATES)
    fresh = jobs.aggregate(n=Sum(F("variant_count") - F("cursor")))["n"] or 0
    requeued = TaskSet.objects.filter(job__in=jobs, state=TaskSet.State.QUEUED).count()
    waiting = Machine.objects.filter(
        target=target, stop_mode=Machine.StopMode.NONE,
        state__in=[Machine.State.LAUNCHING, Machine.State.STARTING, Machine.State.IDLE],
    ).count()
    return max(fresh + requeued - waiting, 0)


def _free_slots(target: Target, count: int) -> list[int]:
    if count <= 0:
        return []
    capacity = target.capacity or settings.DISTRIBUTOR_CAP
    taken = set(Machine.objects.filter(target=target, state__in=Machine.LIVE_STATES).values_list("slot", flat=True))
    taken |= Slot.out_of_service(target)  # slot health, the target's fault; host health is HostLoad's
    return [slot for slot in range(capacity) if slot not in taken][:count]


def _create_machine(target: Target, slot: int, host: str, health_check: bool = False) -> Machine | None:
    try:
        with transaction.atomic():
            machine = Machine.objects.create(target=target, slot=slot, host=host, address=target.address_of(slot),
                                             health_check=health_check,
                                             activity="waiting for a worker" + (" (health check)" if health_check else ""))
    except IntegrityError:
        return None  # another tick took the slot
    transaction.on_commit(lambda: launch_message(machine))
    return machine


def launch_message(machine: Machine) -> None:
    """Hand the machine to its host's machines cluster."""
    async_task("distributor.machine.run_machine", machine.pk, cluster=f"machines-{machine.host}",
               task_name=f"machine-{machine.pk}")


# -- operator controls --------------------------------------------------------


def set_max_machines(value: int) -> DistributorConfig:
    """1..cap; raising it also cancels drains that are no longer wanted."""
    config = DistributorConfig.get()
    config.max_machines = config.check_max(value)
    config.save(update_fields=["max_machines", "updated_at"])
    draining = Machine.objects.filter(state__in=Machine.LIVE_STATES, stop_mode=Machine.StopMode.DRAIN).order_by("pk")
    keep = value - Machine.objects.filter(state__in=Machine.LIVE_STATES, stop_mode=Machine.StopMode.NONE).count()
    if keep > 0 and not config.halted:
        pks = list(draining.values_list("pk", flat=True)[:keep])
        Machine.order(Machine.objects.filter(pk__in=pks, stop_mode=Machine.StopMode.DRAIN), Machine.StopMode.NONE)
    tick()
    return config


def _halt(mode: str) -> int:
    with transaction.atomic():
        DistributorConfig.get().halt()
        Machine.cancel_launches(Machine.objects.all(), "stopped before start")
        count = Machine.order(Machine.objects.all(), mode)
    tick()
    return count


def kill_all() -> int:
    """Stop every machine now; their task-sets go back to the queue untouched."""
    return _halt(Machine.StopMode.KILL)


def shut_down_all() -> int:
    """Let every machine finish its task-set, then stop; launch nothing new."""
    return _halt(Machine.StopMode.DRAIN)


def resume() -> None:
    """Lift a halt: draining machines keep going and new ones are launched."""
    DistributorConfig.get().resume()
    Machine.order(Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN), Machine.StopMode.NONE)
    tick()


def drain_host(host: Host, actor: str) -> int:
    """No new machines on ``host``; those it runs finish their task-set and
    stop (their work goes to other hosts). Returns the machines told."""
    with transaction.atomic():
        host.drain()
        here = Machine.objects.filter(host=host.name)
        Machine.cancel_launches(here, "its host was drained before start")
        count = Machine.order(here.filter(stop_mode=Machine.StopMode.NONE), Machine.StopMode.DRAIN)
    record(actor, "host-drain", host.name, {"machines": count})
    tick()
    return count


def resume_host(host: Host, actor: str) -> int:
    """``host`` takes machines again, for every target; returns the faults lifted."""
    lifted = host.resume()
    record(actor, "host-resume", host.name, {"faults_lifted": lifted})
    tick()
    return lifted


def forget_host(host: Host, actor: str) -> None:
    """A dead host's rows gone (the caller checked that it is dead)."""
    host.forget()
    record(actor, "host-forget", host.name)


def reboot_all() -> int:
    """Reboot every target between two of its task-sets (``Session.reboot``)."""
    return Machine.request_reboot(Machine.objects.all())


# The operator's controls by the names the dashboard, the API, the command line
# and the audit trail give them.
CONTROLS: dict[str, Callable[[], int | None]] = {
    "kill": kill_all, "shutdown": shut_down_all, "resume": resume, "reboot": reboot_all,
}


def control(action: str, actor: str) -> int | None:
    """Run one of CONTROLS for an operator and record it in the audit trail
    (with the number of machines or targets it reached)."""
    result = CONTROLS[action]()
    record(actor, action, "all machines", {} if result is None else {"machines": result})
    return result


def set_max_machines_for(actor: str, value: int) -> DistributorConfig:
    """``set_max_machines`` for an operator, recorded with the old and new value."""
    before = DistributorConfig.get().max_machines
    config = set_max_machines(value)
    record(actor, "max", "max machines", {"max_machines": [before, config.max_machines]})
    return config


def set_slot_health(target: Target, index: int, health: str, cause: str = "", actor: str = "") -> Slot:
    """The operator (``actor``, for the audit trail) puts a slot into
    maintenance (its machine drains) or back in service; ValueError names a
    slot the pool does not have or a health the operator cannot set."""
    capacity = target.capacity or settings.DISTRIBUTOR_CAP
    if not 0 <= index < capacity:
        raise ValueError(f"target {target.name} has slots 0 to {capacity - 1}, not {index}")
    if "\x00" in cause:  # the page's form passes it as typed; PostgreSQL stores no NUL
        raise ValueError("cause: must be text without control characters (it holds a NUL)")
    before = Slot.objects.filter(target=target, index=index).values_list("health", flat=True).first() or "healthy"
    if health == Slot.Health.MAINTENANCE:
        slot = Slot.set_maintenance(target, index, cause)
    elif health == Slot.Health.HEALTHY:
        slot = Slot.set_healthy(target, index)
    else:
        raise ValueError(f"health must be maintenance or healthy, not {health!r}")
    if actor:
        record(actor, f"slot-{health}", f"{target.name}:{index}",
                     {"health": [before, slot.health], "cause": slot.cause})
    tick()
    return slot


def ensure_schedule() -> None:
    """The minute schedule that runs ``tick`` in the default cluster."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="distributor-tick",
        defaults={"func": "distributor.reconciler.tick", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )
