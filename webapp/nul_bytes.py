"""No URL of the site takes a NUL character: PostgreSQL cannot hold one in a
text value, so a query parameter or path segment carrying one (?owner=a%00b,
/api/slots/x%00/0) reached a filter and failed as a 500 there, while SQLite
answered. Refused here, before any view, naming the parameter; the API
answers JSON, everything else plain text, as for a refused body."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

MESSAGE = "must be text without control characters (it holds a NUL)"


class NulBytesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = _field_with_nul(request)
        if field is None:
            return self.get_response(request)
        if request.path_info.startswith("/api/"):
            return JsonResponse({"errors": {field: MESSAGE}}, status=400)
        return HttpResponse(f"Bad request: {field}: {MESSAGE}.\n", status=400, content_type="text/plain; charset=utf-8")


def _field_with_nul(request: HttpRequest) -> str | None:
    if "\x00" in request.path_info:
        return "path"
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            return key.replace("\x00", "\\0")
    return None
