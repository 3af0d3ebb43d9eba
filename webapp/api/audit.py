"""GET /api/audit (staff): the audit trail, newest first, as JSON."""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from distributor.audit import entries, parse_since
from webapp.api.auth import ApiError, api

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@api("GET", staff=True)
def audit(request: HttpRequest) -> JsonResponse:
    since = None
    if request.GET.get("since"):
        try:
            since = parse_since(request.GET["since"])
        except ValueError as error:
            raise ApiError(400, {"since": str(error)}) from None
    limit = _limit(request.GET.get("limit"))
    rows = entries(since=since, action=request.GET.get("action", ""), actor=request.GET.get("actor", ""))
    return JsonResponse({"results": [entry.as_dict() for entry in rows[:limit]], "limit": limit})


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, {"limit": f"must be an integer from 1 to {MAX_LIMIT}"})
    return int(raw)
