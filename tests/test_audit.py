"""The audit trail: every operator action stored with who, when and what changed."""
from __future__ import annotations

from datetime import date
from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied

from distributor.audit import cli_actor, record
from distributor.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_record_stores_who_what_and_the_changes_as_json():
    record("alice", "max", "max machines", {"max_machines": [1, 4], "on": date(2026, 12, 5)})
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.subject) == ("alice", "max", "max machines")
    assert entry.changes == {"max_machines": [1, 4], "on": "2026-12-05"}
    assert entry.at is not None


def test_the_trail_is_append_only():
    record("alice", "kill")
    entry = AuditEntry.objects.get()
    entry.action = "resume"
    with pytest.raises(PermissionDenied):
        entry.save()
    with pytest.raises(PermissionDenied):
        entry.delete()
    assert AuditEntry.objects.get().action == "kill"


def test_cli_actor_is_the_login_of_the_process():
    with mock.patch("getpass.getuser", return_value="rene"):
        assert cli_actor() == "cli:rene"
    with mock.patch("getpass.getuser", side_effect=OSError("no login")):
        assert cli_actor() == "cli:unknown"
