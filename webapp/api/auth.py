"""The one decorator every API view carries.

A request authenticates with ``Authorization: Bearer <token>`` or with the
browser's session. Session requests that change something must pass the CSRF
check a form would (a token request cannot be forged by another site: the
browser never adds the header on its own).
"""
from __future__ import annotations

from functools import wraps
from typing import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from distributor.taskfile import DepthError, load_json
from webapp.models import ApiToken
from webapp.nul_bytes import MESSAGE as NUL_MESSAGE

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiError(Exception):
    """An answer other than success: ``errors`` maps each field to its message."""

    def __init__(self, status: int, errors: dict, **extra):
        self.status, self.errors, self.extra = status, errors, extra
        super().__init__(f"{status} {errors}")

    def response(self) -> JsonResponse:
        return JsonResponse({"errors": self.errors, **self.extra}, status=self.status)


def api(*methods: str, staff: bool = False) -> Callable:
    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            try:
                request.user = _authenticate(request)
                if staff and not request.user.is_staff:
                    raise ApiError(403, {"authorization": "only staff may do this"})
                if request.method not in allowed:
                    raise ApiError(405, {"method": f"{request.method} is not allowed here; use {', '.join(allowed)}"})
                if request.method == "HEAD":  # a GET without its body (HTTP: every GET route answers HEAD)
                    request.method = "GET"
                    return _without_body(view(request, *args, **kwargs))
                return view(request, *args, **kwargs)
            except ApiError as error:
                return _answer(error, allowed)
            except RequestDataTooBig:
                return _answer(ApiError(413, {"body": f"the request is {request.META.get('CONTENT_LENGTH')} bytes; "
                                                      f"at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} are read"}), allowed)
            except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent, UnreadablePostError) as error:
                # Django would answer these with its HTML "Bad Request (400)".
                return _answer(ApiError(400, {"body": f"malformed multipart/form-data: {error or type(error).__name__}"}),
                               allowed)

        allowed = (*methods, "HEAD") if "GET" in methods else methods
        wrapper.api_methods = methods
        wrapper.staff_only = staff
        return wrapper

    return decorate


def _answer(error: ApiError, allowed: tuple[str, ...]) -> JsonResponse:
    response = error.response()
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="distributor"'
    if error.status == 405:
        response["Allow"] = ", ".join(allowed)
    return response


def _without_body(response: HttpResponseBase) -> HttpResponseBase:
    """The answer to HEAD: the GET's status and headers, no body."""
    if response.streaming:
        head = HttpResponse(status=response.status_code)
        for header, value in response.items():
            head[header] = value
        response.close()
        return head
    response["Content-Length"] = str(len(response.content))
    response.content = b""
    return response


def _authenticate(request: HttpRequest):
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, {"authorization": "expected 'Authorization: Bearer <token>'"})
        user = ApiToken.authenticate(token.strip())
        if user is None:
            raise ApiError(401, {"authorization": "unknown or revoked token, or expired"})
        return user
    if not request.user.is_authenticated:
        raise ApiError(401, {"authorization": "log in, or send 'Authorization: Bearer <token>' (tokens: your profile page)"})
    if request.method not in SAFE_METHODS:
        refused = CsrfViewMiddleware(lambda _: None).process_view(request, None, (), {})
        if refused is not None:
            raise ApiError(403, {"csrf": "a session request needs the CSRF token (X-CSRFToken); scripts use a Bearer token"})
    return request.user


def json_body(request: HttpRequest) -> dict:
    try:
        body = load_json(request.body or b"{}")
    except DepthError as error:
        raise ApiError(400, {"body": str(error)}) from None
    except RequestDataTooBig:
        raise ApiError(413, {"body": f"the request is {request.META.get('CONTENT_LENGTH')} bytes; "
                                     f"a JSON body may be at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"}) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, {"body": f"invalid JSON: {error}"}) from None
    if not isinstance(body, dict):
        raise ApiError(400, {"body": "must be a JSON object"})
    where = _nul_path(body)
    if where is not None:  # PostgreSQL holds no NUL in text: a lookup or a save with one was a 500 there
        raise ApiError(400, {where: NUL_MESSAGE})
    return body


def _nul_path(body: dict) -> str | None:
    """The top-level field whose key or value holds the first NUL character of
    the body (nested values too: their depth is bounded by load_json); None if
    none does."""
    for key, value in body.items():
        if "\x00" in key:
            return key.replace("\x00", "\\0")
        if _holds_nul(value):
            return key
    return None


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(_holds_nul(item) for item in value)
