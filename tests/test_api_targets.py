"""Target pools through the API: everyone lists and reads them, staff create
and edit them with the web form's checks (the kind's settings check, one
default pool); bad input is a 400 naming the field and writes nothing."""
from __future__ import annotations

import json

import pytest

from distributor.models import AuditEntry, Target


def _call(client, method: str, url: str, token: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_everyone_lists_and_reads_targets(client, token, stdio_target):
    listing = _call(client, "get", "/api/targets", token).json()
    assert listing["count"] == 1
    [row] = listing["results"]
    assert (row["name"], row["kind"], row["settings"], row["addresses"]) == ("dry", "stdio", {"print": False}, [])
    assert _call(client, "get", f"/api/targets/{stdio_target.pk}", token).json() == row
    assert row["url"] == f"http://testserver/api/targets/{stdio_target.pk}"


def test_staff_create_a_target_as_target_add_would(client, staff_token, db):
    body = {"name": "boards", "kind": "genode", "addresses": ["10.0.0.5:3001", "10.0.0.6:3001"],
            "settings": {"ping": True}, "host": "lab", "is_default": True}
    response = _call(client, "post", "/api/targets", staff_token, body)
    assert response.status_code == 201, response.json()
    created = Target.objects.get(name="boards")
    assert (created.kind, created.addresses, created.settings, created.host, created.is_default) == (
        "genode", ["10.0.0.5:3001", "10.0.0.6:3001"], {"ping": True}, "lab", True)
    assert response.json()["capacity"] == 2 and response.json()["id"] == created.pk
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.subject) == ("sam", "target-add", "boards")
    assert entry.changes["addresses"] == [None, ["10.0.0.5:3001", "10.0.0.6:3001"]]


def test_a_new_default_takes_the_mark_from_the_old_one(client, staff_token, stdio_target):
    Target.objects.filter(pk=stdio_target.pk).update(is_default=True)
    assert _call(client, "post", "/api/targets", staff_token, {"name": "sim", "kind": "simso", "is_default": True}).status_code == 201
    assert list(Target.objects.filter(is_default=True).values_list("name", flat=True)) == ["sim"]


def test_staff_edit_the_fields_they_send_and_nothing_else(client, staff_token, stdio_target):
    for method, body in (("patch", {"settings": {"print": True}}), ("post", {"host": "h2"})):
        response = _call(client, method, f"/api/targets/{stdio_target.pk}", staff_token, body)
        assert response.status_code == 200, response.json()
    stdio_target.refresh_from_db()
    assert (stdio_target.name, stdio_target.kind, stdio_target.settings, stdio_target.host) == (
        "dry", "stdio", {"print": True}, "h2")
    assert [(e.action, e.changes) for e in AuditEntry.objects.order_by("pk")] == [
        ("target-edit", {"settings": [{"print": False}, {"print": True}]}), ("target-edit", {"host": ["", "h2"]})]


@pytest.mark.parametrize("body, field", [
    ({"kind": "stdio"}, "name"),
    ({"name": "x"}, "kind"),
    ({"name": "bad name!", "kind": "stdio"}, "name"),
    ({"name": "x", "kind": "warp-drive"}, "kind"),
    ({"name": "x", "kind": "stdio", "settings": {"colour": "red"}}, "settings"),
    ({"name": "x", "kind": "stdio", "settings": [1]}, "settings"),
    ({"name": "x", "kind": "genode", "addresses": "10.0.0.5:3001"}, "addresses"),
    ({"name": "x", "kind": "genode", "addresses": ["10.0.0.5:3001\n10.0.0.6:1"]}, "addresses"),
    ({"name": "x", "kind": "stdio", "is_default": "yes"}, "is_default"),
    ({"name": "dry", "kind": "stdio"}, "name"),
    ({"name": "x", "kind": "stdio", "colour": "red"}, "colour"),
])
def test_bad_targets_get_400_naming_the_field_and_nothing_is_stored(client, staff_token, stdio_target, body, field):
    response = _call(client, "post", "/api/targets", staff_token, body)
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    assert list(Target.objects.values_list("name", flat=True)) == ["dry"] and not AuditEntry.objects.exists()


def test_a_bad_edit_changes_nothing(client, staff_token, stdio_target):
    response = _call(client, "patch", f"/api/targets/{stdio_target.pk}", staff_token,
                     {"host": "h2", "settings": {"print": "loud"}})
    assert response.status_code == 400 and "settings" in response.json()["errors"]
    stdio_target.refresh_from_db()
    assert (stdio_target.host, stdio_target.settings) == ("", {"print": False})


def test_only_staff_create_or_edit_targets(client, token, stdio_target):
    assert _call(client, "post", "/api/targets", token, {"name": "x", "kind": "stdio"}).status_code == 403
    assert _call(client, "patch", f"/api/targets/{stdio_target.pk}", token, {"host": "h"}).status_code == 403
    assert Target.objects.count() == 1 and Target.objects.get().host == ""


def test_an_unknown_target_is_404(client, staff_token, db):
    assert _call(client, "get", "/api/targets/999", staff_token).status_code == 404
    assert _call(client, "patch", "/api/targets/999", staff_token, {"host": "h"}).status_code == 404
