"""Machines in the API: everyone reads them (as the machines page shows
them), staff drain or kill one (as the admin's actions do: the order is a
column its lifeline reads; a drained machine finishes its task-set, a killed
one puts it back in the queue untouched). The whole pool's controls are
``/api/distributor`` and ``/api/distributor/<action>``."""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from distributor.audit import record, user_actor
from distributor.models import Machine, Target
from webapp.api.auth import ApiError, api
from webapp.api.common import fields_of, get_or_404, iso, listing, page_of

ORDERS = {"drain": Machine.StopMode.DRAIN, "kill": Machine.StopMode.KILL}


def as_dict(request: HttpRequest, machine: Machine) -> dict:
    current = machine.current
    return {
        "id": machine.pk, "target": machine.target.name, "slot": machine.slot, "host": machine.host,
        "address": machine.address, "state": machine.state, "live": machine.is_live, "stop_mode": machine.stop_mode,
        "reboot_requested": machine.reboot_requested, "activity": machine.activity,
        "current": {"taskset": current.pk, "job": current.job_id, "variant": current.variant,
                    "since": iso(machine.current_since)} if current else None,
        "tasksets_done": machine.tasksets_done, "target_boots": machine.target_boots,
        "heartbeat_at": iso(machine.heartbeat_at), "launched_at": iso(machine.launched_at),
        "started_at": iso(machine.started_at), "stopped_at": iso(machine.stopped_at),
        "last_error": machine.last_error,
        "url": request.build_absolute_uri(reverse("api-machine", args=[machine.pk])),
        "page": request.build_absolute_uri(reverse("machine", args=[machine.pk])),
    }


def _rows():
    return Machine.objects.select_related("target", "current")


@api("GET")
def machines(request: HttpRequest) -> JsonResponse:
    rows = _rows().order_by("-pk")
    state, target, live = (request.GET.get(key) for key in ("state", "target", "live"))
    if state is not None:
        if state not in Machine.State.values:
            raise ApiError(400, {"state": f"must be one of {', '.join(Machine.State.values)}"})
        rows = rows.filter(state=state)
    if target is not None:
        if not Target.objects.filter(name=target).exists():
            raise ApiError(400, {"target": f"no target named {target!r}"})
        rows = rows.filter(target__name=target)
    if live is not None:
        if live not in ("true", "false"):
            raise ApiError(400, {"live": "must be true or false"})
        rows = rows.filter(state__in=Machine.LIVE_STATES) if live == "true" else rows.exclude(
            state__in=Machine.LIVE_STATES)
    page = page_of(request, rows)
    return JsonResponse(listing(page, [as_dict(request, machine) for machine in page.object_list]))


@api("GET")
def machine(request: HttpRequest, machine_id: int) -> JsonResponse:
    return JsonResponse(as_dict(request, get_or_404(_rows(), machine_id)))


@api("POST", staff=True)
def machine_order(request: HttpRequest, machine_id: int, action: str) -> JsonResponse:
    if action not in ORDERS:
        raise ApiError(404, {"action": f"unknown action; use {', '.join(ORDERS)}"})
    row = get_or_404(_rows(), machine_id)
    fields_of(request, set())
    if not Machine.order(Machine.objects.filter(pk=row.pk), ORDERS[action]):
        raise ApiError(409, {"state": f"machine {row.pk} is {row.state}: only a live machine takes orders"})
    record(user_actor(request.user), action, str(row), {"stop_mode": [row.stop_mode, ORDERS[action]]})
    return JsonResponse({"action": action, "machine": as_dict(request, get_or_404(_rows(), machine_id))})
