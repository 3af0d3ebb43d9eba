"""The pools' slots over the API: their health (healthy, suspect,
quarantined, maintenance) with its cause, and maintenance on and off for
staff (``reconciler.set_slot_health``, as the dashboard and
``distributor slot`` do)."""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from distributor import reconciler
from distributor.audit import user_actor
from distributor.models import Machine, Slot, Target
from distributor.status import slot_health
from webapp.api.auth import ApiError, api, json_body

SETTABLE = (Slot.Health.MAINTENANCE, Slot.Health.HEALTHY)
CAUSE_MAX = 1000


@api("GET")
def slots(request: HttpRequest) -> JsonResponse:
    machines = list(Machine.objects.filter(state__in=Machine.LIVE_STATES).select_related("target"))
    return JsonResponse({"slots": slot_health(machines)})


@api("POST", staff=True)
def slot(request: HttpRequest, target: str, index: int) -> JsonResponse:
    pool = Target.objects.filter(name=target).first()
    if pool is None:
        raise ApiError(404, {"target": f"no target named {target!r}"})
    health, cause = _health_and_cause(json_body(request))
    try:
        changed = reconciler.set_slot_health(pool, index, health, cause, actor=user_actor(request.user))
    except ValueError as error:
        raise ApiError(404, {"slot": str(error)}) from None
    return JsonResponse({"target": pool.name, "slot": changed.index, "health": changed.health, "cause": changed.cause})


def _health_and_cause(body: dict) -> tuple[str, str]:
    unknown = sorted(set(body) - {"health", "cause"})
    if unknown:
        raise ApiError(400, {key: "unknown field" for key in unknown})
    health = body.get("health")
    if health not in SETTABLE:
        raise ApiError(400, {"health": f"required: one of {', '.join(SETTABLE)}"})
    cause = body.get("cause", "")
    if not isinstance(cause, str) or len(cause) > CAUSE_MAX:
        raise ApiError(400, {"cause": f"must be a text of at most {CAUSE_MAX} characters"})
    return health, cause
