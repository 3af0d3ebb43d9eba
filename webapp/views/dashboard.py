"""The dashboard: what every machine does and how far every job is.

The page is a frame; its live part is ``dashboard_fragment``, polled every
two seconds. The fragment's query count does not grow with the number of
machines, jobs or task-sets (tests/test_web_dashboard.py holds it).
"""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from distributor import reconciler
from distributor.audit import recent as recent_actions, user_actor
from distributor.models import DistributorConfig, Job, Machine, Slot, Target
from distributor.status import distributor_state, hosts, slot_health
from webapp.access import login_required, staff_required
from webapp.progress import add_rate, progress_of

# Jobs shown on the dashboard; the jobs page has the rest.
DASHBOARD_JOBS = 10
RECENT_FAILURES = 5

CONTROLS = {
    "kill": "Killing {} machine(s): their task-sets go back to the queue. Resume to start again.",
    "shutdown": "Shutting down {} machine(s) after their current task-set.",
    "resume": "Resumed: machines are launched again while there is work.",
    "reboot": "{} target(s) reboot after their current task-set.",
}


def dashboard_context() -> dict:
    """Everything the dashboard shows, in a fixed number of queries."""
    config = DistributorConfig.get()
    machines = list(
        Machine.objects.filter(state__in=Machine.LIVE_STATES)
        .select_related("target", "current").order_by("target__name", "slot")
    )
    active = Job.objects.filter(state__in=Job.ACTIVE_STATES)
    jobs = list(active.select_related("target", "owner").order_by("-priority", "pk")[:DASHBOARD_JOBS])
    progress = progress_of(jobs)
    now = timezone.now()
    for job in jobs:
        job.p = add_rate(job, progress[job.pk], now)
    failures = list(
        Machine.objects.filter(state__in=[Machine.State.FAILED, Machine.State.DEAD])
        .exclude(last_error="").select_related("target").order_by("-pk")[:RECENT_FAILURES]
    )
    return {
        "config": config,
        "state": distributor_state(config, machines),
        "machines": machines,
        "busy_count": sum(m.state == Machine.State.BUSY for m in machines),
        "jobs": jobs,
        "more_jobs": max(active.count() - len(jobs), 0) if len(jobs) == DASHBOARD_JOBS else 0,
        "rate": _total_rate(jobs),
        "failures": failures,
        "actions": recent_actions(),
        "slots": slot_health(machines),
        "hosts": hosts(config, machines),
        "now": now,
    }


def _total_rate(jobs: list[Job]) -> float | None:
    rates = [job.p.rate_per_min for job in jobs if job.p.rate_per_min is not None]
    return round(sum(rates), 2) if rates else None


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "web/dashboard.html", dashboard_context())


@login_required
def dashboard_fragment(request: HttpRequest) -> HttpResponse:
    return render(request, "web/_dashboard_live.html", dashboard_context())


@staff_required
@require_POST
def set_max_machines(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("max_machines", "")
    try:
        config = reconciler.set_max_machines_for(user_actor(request.user), int(raw))
    except ValueError:
        return _control_error(request, f"{raw!r} is not a whole number")
    except ValidationError as error:
        return _control_error(request, " ".join(error.message_dict["max_machines"]))
    messages.success(request, f"Machines: at most {config.max_machines} of {config.cap}.")
    return redirect("dashboard")


def _control_error(request: HttpRequest, message: str) -> HttpResponse:
    context = {**dashboard_context(), "max_error": message, "max_value": request.POST.get("max_machines", "")}
    return render(request, "web/dashboard.html", context, status=400)


@staff_required
@require_POST
def control(request: HttpRequest, action: str) -> HttpResponse:
    if action not in CONTROLS:
        raise Http404("no such control")
    result = reconciler.control(action, user_actor(request.user))
    messages.success(request, CONTROLS[action].format(result))
    return redirect("dashboard")


@staff_required
@require_POST
def set_slot_health(request: HttpRequest, target: str, index: int, health: str) -> HttpResponse:
    """Maintenance on or off for one slot; its machine drains (the reconciler)."""
    pool = Target.objects.filter(name=target).first()
    if pool is None:
        raise Http404("no such target")
    cause = request.POST.get("cause", "").strip()[:1000]
    try:
        slot = reconciler.set_slot_health(pool, index, health, cause or f"maintenance by {request.user}",
                                          actor=user_actor(request.user))
    except ValueError as error:
        messages.error(request, f"Slot {target}:{index}: {error}")
        return redirect("dashboard")
    if slot.health == Slot.Health.MAINTENANCE:
        messages.success(request, f"Slot {target}:{index} is in maintenance: its machine finishes its task-set, then stops.")
    else:
        messages.success(request, f"Slot {target}:{index} is back in service.")
    return redirect("dashboard")
