"""What the operator sees of the distributor: busy, idle or halted, the
hosts, the live machines and the queue (the dashboard, the API and
``distributor status``). Read-only: the reconciler changes things."""
from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from distributor.models import DistributorConfig, Host, HostTargetFault, Job, Machine, Slot, TaskSet


def overview() -> dict:
    """What the operator sees: busy/idle/halted, machines and the queue."""
    config = DistributorConfig.get()
    machines = list(
        Machine.objects.filter(state__in=Machine.LIVE_STATES).select_related("target", "current").order_by("pk")
    )
    jobs = list(Job.objects.filter(state__in=Job.ACTIVE_STATES).order_by("-priority", "pk"))
    return {
        "state": distributor_state(config, machines),
        "hosts": hosts(config, machines),
        "max_machines": config.max_machines,
        "cap": config.cap,
        "halted": config.halted,
        "machines": [_machine_status(m) for m in machines],
        "jobs": [{"id": job.pk, "name": job.name, "state": job.state, "target": job.target_id, **job.progress()} for job in jobs],
        "slots": slot_health(machines),
    }


def distributor_state(config: DistributorConfig, machines: list[Machine]) -> str:
    """halted (the operator's kill or shutdown), busy while a machine runs a
    task-set or work waits in any active job, else idle: machines merely
    waiting for work do not make the distributor busy."""
    if config.halted:
        return "halted"
    active = Job.objects.filter(state__in=Job.ACTIVE_STATES)
    busy = (any(m.state == Machine.State.BUSY for m in machines)
            or active.filter(cursor__lt=F("variant_count")).exists()
            or TaskSet.objects.filter(job__in=active, state=TaskSet.State.QUEUED).exists())
    return "busy" if busy else "idle"


def slot_health(machines: list[Machine]) -> list[dict]:
    """Each slot with a record of health (any that ever failed or was taken
    out of service) and each slot a live machine holds (healthy when it has
    no record), by target and index: the target's fault, with its cause."""
    rows = {(s.target.name, s.index): s for s in Slot.objects.select_related("target")}
    found = {key: _slot_status(*key, slot) for key, slot in rows.items()}
    for machine in machines:
        found.setdefault((machine.target.name, machine.slot), _slot_status(machine.target.name, machine.slot, None))
    return [found[key] for key in sorted(found)]


def _slot_status(target: str, index: int, slot: Slot | None) -> dict:
    if slot is None:
        return {"target": target, "slot": index, "health": Slot.Health.HEALTHY, "cause": "", "failures_in_a_row": 0,
                "next_check": None, "since": None}
    return {"target": target, "slot": index, "health": slot.health, "cause": slot.cause,
            "failures_in_a_row": slot.failures_in_a_row,
            "next_check": slot.next_check_at.isoformat() if slot.next_check_at else None,
            "since": slot.changed_at.isoformat()}


def hosts(config: DistributorConfig, machines: list[Machine]) -> list[dict]:
    """Each host: its health (ok, drained, faulty: the targets it cannot run,
    and why; silent: no heartbeat), capacity, live machines, heartbeat age."""
    live = set(Host.live(config.heartbeat_timeout_s).values_list("name", flat=True))
    faults: dict[str, list[dict]] = {}
    for fault in HostTargetFault.objects.select_related("target").order_by("target__name"):
        faults.setdefault(fault.host, []).append({
            "target": fault.target.name, "cause": fault.cause, "seen_at": fault.seen_at.isoformat(),
            "faults_in_a_row": fault.faults_in_a_row,
            "retry_at": fault.retry_at.isoformat() if fault.retry_at else None})
    now = timezone.now()
    rows = []
    for host in Host.objects.order_by("name"):
        alive, its_faults = host.name in live, faults.get(host.name, [])
        health = "silent" if not alive else "drained" if host.drained else "faulty" if its_faults else "ok"
        rows.append({
            "name": host.name, "health": health, "alive": alive, "drained": host.drained, "faults": its_faults,
            "capacity": host.capacity, "machines": sum(m.host == host.name for m in machines),
            "heartbeat_age_s": round((now - host.heartbeat_at).total_seconds(), 1) if host.heartbeat_at else None,
        })
    return rows


def _machine_status(machine: Machine) -> dict:
    return {
        "id": machine.pk,
        "target": machine.target.name,
        "slot": machine.slot,
        "host": machine.host,
        "address": machine.address,
        "state": machine.state,
        "stop_mode": machine.stop_mode,
        "activity": machine.activity,
        "taskset": machine.current_id,
        "job": machine.current.job_id if machine.current else None,
        "since": machine.current_since.isoformat() if machine.current_since else None,
        "tasksets_done": machine.tasksets_done,
        "health_check": machine.health_check,
        "last_error": machine.last_error,
    }
