"""Helpers every API module shares: one object or 404, pages of a listing,
small JSON bodies of known fields, times as ISO 8601, the staff check of an
endpoint whose reading is open to everyone."""
from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest

from webapp.api.auth import ApiError, json_body

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ID = 2**63 - 1


def get_or_404(queryset, pk: int):
    row = queryset.filter(pk=pk).first() if 0 < pk <= MAX_ID else None
    if row is None:
        raise ApiError(404, {"id": f"no {queryset.model._meta.verbose_name} {pk}"})
    return row


def page_of(request: HttpRequest, rows):
    def positive(key: str, default: int, maximum: int) -> int:
        raw = request.GET.get(key)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not 1 <= int(raw) <= maximum:
            raise ApiError(400, {key: f"must be an integer from 1 to {maximum}"})
        return int(raw)

    size = positive("page_size", PAGE_SIZE, MAX_PAGE_SIZE)
    number = positive("page", 1, 10**9)
    paginator = Paginator(rows, size)
    if number > max(paginator.num_pages, 1):
        raise ApiError(404, {"page": f"there are {paginator.num_pages} page(s)"})
    return paginator.page(number)


def listing(page, results: list) -> dict:
    return {"count": page.paginator.count, "page": page.number, "pages": page.paginator.num_pages, "results": results}


def fields_of(request: HttpRequest, allowed: set[str]) -> dict:
    """A small JSON body of known fields; no body (or an empty form) is an empty object."""
    if request.content_type != "application/json":
        if request.POST or request.FILES:
            raise ApiError(415, {"content_type": "send application/json"})
        return {}
    body = json_body(request)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, {key: "unknown field" for key in unknown})
    return body


def iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def require_staff(request: HttpRequest, what: str) -> None:
    """For endpoints everyone may read and only staff may change."""
    if not request.user.is_staff:
        raise ApiError(403, {"authorization": f"only staff may {what}"})
