"""Target pools in the API: everyone reads them, staff create and edit them
through the same form as the web pages and the admin
(``distributor.forms.TargetForm``: the kind's own settings check, one default
pool), so a setting refused on the page is refused here with the same words."""
from __future__ import annotations

import json

from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from distributor.audit import record, user_actor
from distributor.forms import TargetForm
from distributor.models import Target
from webapp.api.auth import ApiError, api
from webapp.api.common import fields_of, get_or_404, iso, listing, page_of, require_staff

# The JSON type each writable field must have (checked before the form sees it).
FIELD_TYPES = {"name": str, "kind": str, "settings": dict, "addresses": list, "host": str, "is_default": bool}
TYPE_WORDS = {str: "a string", dict: "a JSON object", list: "a list of \"host:port\" strings", bool: "true or false"}


def as_dict(request: HttpRequest, target: Target) -> dict:
    return {"id": target.pk, "name": target.name, "kind": target.kind, "is_default": target.is_default,
            "capacity": _capacity(target), "host": target.host, "addresses": target.addresses,
            "settings": target.settings, "created_at": iso(target.created_at),
            "url": request.build_absolute_uri(reverse("api-target", args=[target.pk]))}


def _capacity(target: Target) -> int | None:
    try:
        return target.capacity
    except KeyError:  # a kind no longer installed: the pool is listed, its capacity unknown
        return None


@api("GET", "POST")
def targets(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        require_staff(request, "create targets")
        body = fields_of(request, set(FIELD_TYPES))
        for required in ("name", "kind"):
            if required not in body:
                raise ApiError(400, {required: "required"})
        return JsonResponse(as_dict(request, _save(request, Target(), body)), status=201)
    page = page_of(request, Target.objects.order_by("-is_default", "name"))
    return JsonResponse(listing(page, [as_dict(request, target) for target in page.object_list]))


@api("GET", "PATCH", "POST")
def target(request: HttpRequest, target_id: int) -> JsonResponse:
    row = get_or_404(Target.objects.all(), target_id)
    if request.method in ("PATCH", "POST"):
        require_staff(request, "edit targets")
        row = _save(request, row, fields_of(request, set(FIELD_TYPES)))
    return JsonResponse(as_dict(request, row))


def _save(request: HttpRequest, target: Target, body: dict) -> Target:
    """The fields given over the target's own, through TargetForm; nothing is
    written unless all of it is valid."""
    errors = {key: f"must be {TYPE_WORDS[kind]}" for key, kind in FIELD_TYPES.items()
              if key in body and not isinstance(body[key], kind)}
    addresses = body.get("addresses", [])
    if "addresses" not in errors and not all(isinstance(a, str) and a.strip() and len(a.split()) == 1
                                             for a in addresses):
        errors["addresses"] = "each address is one \"host:port\" without spaces or line breaks"
    if errors:
        raise ApiError(400, errors)
    before = _audited(target) if target.pk else {}
    values = {"name": target.name, "kind": target.kind, "settings": target.settings or {},
              "addresses": target.addresses or [], "host": target.host, "is_default": target.is_default} | body
    form = TargetForm({**values, "settings": json.dumps(values["settings"]),
                       "addresses": "\n".join(values["addresses"])}, instance=target)
    if not form.is_valid():
        raise ApiError(400, {("target" if field == NON_FIELD_ERRORS else field): " ".join(messages)
                             for field, messages in form.errors.items()})
    saved = form.save()
    after = _audited(saved)
    changes = {key: [before.get(key), value] for key, value in after.items() if before.get(key) != value}
    record(user_actor(request.user), "target-edit" if before else "target-add", saved.name, changes)
    return saved


def _audited(target: Target) -> dict:
    return {key: getattr(target, key) for key in FIELD_TYPES}
