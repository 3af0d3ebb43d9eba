"""Request bodies are refused by their declared length before anything reads them.

Django reads a POST body the first time anyone touches ``request.POST`` —
and CsrfViewMiddleware does, before the view runs — spooling uploads to
``FILE_UPLOAD_TEMP_DIR``. So the length is checked here, in the request phase
of a middleware, against the limit of the view the URL resolves to: a view
may raise its limit (``body_limit``, the uploads of binaries and images) and
say how a refusal looks (``too_large``, the submission form names its
field); the API answers JSON, everything else plain text. The default is
``DATA_UPLOAD_MAX_MEMORY_SIZE``, which also bounds what Django itself reads.
"""
from __future__ import annotations

from typing import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

# Room for the form fields beside an upload.
FIELDS_MARGIN = 1024 * 1024
UPLOADS = ("BINARY_MAX_BYTES", "IMAGE_MAX_BYTES")
TooLarge = Callable[[HttpRequest, int, int], HttpResponse]


def content_length(request: HttpRequest) -> int:
    """The body's declared length; 0 when absent or not a number (Django then reads nothing)."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0


def size_message(length: int, limit: int) -> str:
    return (f"the request is {length} bytes; a submission may be at most {limit} bytes "
            f"(a task-set file or a pasted text at most {settings.TASKSET_FILE_MAX_BYTES})")


def body_limit(*settings_names: str, too_large: TooLarge | None = None) -> Callable:
    """Give a view a larger body limit (the largest of these settings plus room
    for the fields) and, optionally, its own answer to a refused body."""
    def decorate(view):
        if settings_names:
            view.body_limit_settings = settings_names
        if too_large is not None:
            view.body_too_large = too_large
        return view

    return decorate


def limit_of(names: tuple[str, ...]) -> int:
    """The body limit for these settings (none: the default)."""
    if not names:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return max(getattr(settings, name) for name in names) + FIELDS_MARGIN


class BodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = content_length(request)
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:  # the common case resolves nothing
            try:
                match = resolve(request.path_info)
            except Resolver404:
                match = None
            view = match.func if match else None
            # The admin stores binaries and boot images too.
            limit = limit_of(UPLOADS if match and "admin" in match.app_names
                             else getattr(view, "body_limit_settings", ()))
            if length > limit:
                answer = getattr(view, "body_too_large", None) or _refuse
                return answer(request, length, limit)
        return self.get_response(request)


def _refuse(request: HttpRequest, length: int, limit: int) -> HttpResponse:
    if request.path_info.startswith("/api/"):
        key = "file" if request.content_type == "multipart/form-data" else "body"
        return JsonResponse({"errors": {key: size_message(length, limit)}}, status=413)
    return HttpResponse(f"Request too large: {length} bytes; the limit here is {limit} bytes.\n", status=413,
                        content_type="text/plain; charset=utf-8")
