"""The admin changes state only through the models' own actions."""
from __future__ import annotations

import pytest

from distributor.models import Job, Machine, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root-admin", password="root-admin-password-1")
    client.force_login(user)
    return client


@pytest.fixture
def machine(db):
    target = Target.objects.create(name="lab", kind="stdio", settings={"print": False})
    return Machine.objects.create(target=target, slot=0, host="h1", state=Machine.State.IDLE)


def test_a_machines_state_cannot_be_edited_in_the_admin(admin_client, machine):
    page = admin_client.get(f"/admin/distributor/machine/{machine.pk}/change/").content.decode()
    assert 'name="state"' not in page and 'name="stop_mode"' not in page and 'name="lease"' not in page
    admin_client.post(f"/admin/distributor/machine/{machine.pk}/change/", {"state": Machine.State.DEAD})
    machine.refresh_from_db()
    assert machine.state == Machine.State.IDLE
    assert admin_client.get("/admin/distributor/machine/add/").status_code == 403


def test_the_admin_drains_and_kills_machines_through_their_orders(admin_client, machine):
    for action, mode in (("drain", Machine.StopMode.DRAIN), ("kill", Machine.StopMode.KILL)):
        admin_client.post("/admin/distributor/machine/", {"action": action, "_selected_action": [machine.pk]})
        machine.refresh_from_db()
        assert machine.stop_mode == mode


def test_a_submitted_jobs_spec_counts_and_state_are_read_only(admin_client, machine):
    job = Job.objects.create(name="j", target=machine.target, spec={"tasksets": []}, variant_count=5, cursor=0)
    page = admin_client.get(f"/admin/distributor/job/{job.pk}/change/").content.decode()
    for field in ("spec", "variant_count", "offset", "state"):
        assert f'name="{field}"' not in page, field
