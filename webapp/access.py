"""Who may see what: every view carries one of these decorators.

Pages redirect a logged-out visitor to the login page. A polled fragment
cannot usefully redirect (htmx would paste the login form into a table), so
it answers 401 with ``HX-Redirect`` and the browser goes to the login page.
Staff-only views answer 403 to other users. A job or a campaign is changed
(cancelled, relabelled, stopped, …) by its owner or by staff: ``may_change``.
"""
from __future__ import annotations

from functools import wraps
from typing import Callable

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url

View = Callable[..., HttpResponse]


def client_address(request: HttpRequest) -> str:
    """The client's address for login throttling: behind the TLS proxy of a
    deployment (DISTRIBUTOR_HTTPS) the last X-Forwarded-For entry, which the
    proxy itself appended (earlier ones come from the client and prove
    nothing); REMOTE_ADDR otherwise."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if settings.HTTPS else ""
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last[:64] or request.META.get("REMOTE_ADDR", "")


def login_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.headers.get("HX-Request"):
            response = HttpResponse("login required", status=401, content_type="text/plain")
            response["HX-Redirect"] = resolve_url(settings.LOGIN_URL)
            return response
        return redirect_to_login(request.get_full_path())

    return wrapper


def staff_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("only staff may do this")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def may_change(user, row) -> bool:
    """Whether ``user`` may change ``row`` (anything with an owner: a job, a
    campaign): its owner or staff."""
    return user.is_staff or (row.owner_id is not None and row.owner_id == user.pk)
