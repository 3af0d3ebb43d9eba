"""The admin changes state only through the models' own actions."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from distributor.models import AuditEntry, Binary, BootImage, Host, Job, Machine, Notification, Target

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


# -- issue 15: a safe admin ---------------------------------------------------------------



def _actions() -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.subject) for e in AuditEntry.objects.order_by("at", "id")]


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.mark.parametrize("model, name, action", [(Binary, "hey", "binary-upload"), (BootImage, "boot.img", "image-upload")])
def test_adding_an_upload_in_the_admin_computes_its_size_and_checksum(admin_client, media, model, name, action):
    url = f"/admin/distributor/{model._meta.model_name}/add/"
    response = admin_client.post(url, {"name": "", "file": SimpleUploadedFile(name, b"first bytes")})
    assert response.status_code == 302, response.content.decode()[:2000]
    item = model.objects.get(name=name)
    assert (item.size, item.sha256) == (11, hashlib.sha256(b"first bytes").hexdigest())
    assert b"".join(item.blob().chunks()) == b"first bytes"
    assert _actions() == [("root-admin", action, name)]


@pytest.mark.parametrize("model", [Binary, BootImage])
def test_replacing_an_uploads_file_in_the_admin_recomputes_its_checksum(admin_client, media, model):
    item, _ = model.store("hey", SimpleUploadedFile("hey", b"old"))
    response = admin_client.post(f"/admin/distributor/{model._meta.model_name}/{item.pk}/change/",
                                 {"file": SimpleUploadedFile("whatever", b"the new bytes")})
    assert response.status_code == 302, response.content.decode()[:2000]
    item.refresh_from_db()
    assert (item.name, item.size, item.sha256) == ("hey", 13, hashlib.sha256(b"the new bytes").hexdigest())
    assert b"".join(item.blob().chunks()) == b"the new bytes"
    assert AuditEntry.objects.get().changes["replaced"] is True


@pytest.mark.parametrize("model, name", [(Binary, "a-name-longer-than-15"), (Binary, "bad/name"), (BootImage, "../x"),
                                         (BootImage, ".hidden")])
def test_the_admin_refuses_an_uploads_name_as_the_web_form_does(admin_client, media, model, name):
    response = admin_client.post(f"/admin/distributor/{model._meta.model_name}/add/",
                                 {"name": name, "file": SimpleUploadedFile("f", b"bytes")})
    assert response.status_code == 200 and "errornote" in response.content.decode()
    assert not model.objects.exists() and not list(media.rglob("*.*")) and not AuditEntry.objects.exists()


def test_the_admin_refuses_an_empty_upload(admin_client, media):
    response = admin_client.post("/admin/distributor/binary/add/", {"name": "hey", "file": SimpleUploadedFile("f", b"")})
    assert response.status_code == 200 and not Binary.objects.exists()


def test_a_jobs_fields_cannot_be_changed_by_posting_them(admin_client, machine):
    job = Job.objects.create(name="j", target=machine.target, spec={"tasksets": []}, variant_count=5, cursor=0)
    admin_client.post(f"/admin/distributor/job/{job.pk}/change/", {
        "name": "renamed", "priority": "0", "spec": '{"x": 1}', "variant_count": "9", "offset": "3",
        "state": Job.State.FINISHED, "tries": "9"})
    job.refresh_from_db()
    assert (job.name, job.spec, job.variant_count, job.offset, job.state, job.tries) == (
        "renamed", {"tasksets": []}, 5, 0, Job.State.QUEUED, 3)
    assert admin_client.get("/admin/distributor/job/add/").status_code == 403


def test_a_jobs_priority_goes_through_its_method_and_the_audit_trail(admin_client, machine):
    job = Job.objects.create(name="j", target=machine.target, spec={"tasksets": []}, variant_count=5, cursor=0)
    admin_client.post(f"/admin/distributor/job/{job.pk}/change/", {"name": "j", "priority": "9"})
    job.refresh_from_db()
    assert job.priority == 9
    assert _actions() == [("root-admin", "job-priority", f"job {job.pk}")]
    Job.objects.filter(pk=job.pk).update(state=Job.State.FINISHED)
    admin_client.post(f"/admin/distributor/job/{job.pk}/change/", {"name": "j", "priority": "-4"})
    job.refresh_from_db()
    assert job.priority == 9 and len(_actions()) == 1  # an ended job's priority is refused, as by the API


def test_the_admins_job_actions_are_recorded(admin_client, machine):
    job = Job.objects.create(name="j", target=machine.target, spec={"tasksets": []}, variant_count=5, cursor=0)
    admin_client.post("/admin/distributor/job/", {"action": "cancel", "_selected_action": [job.pk]})
    assert _actions() == [("root-admin", "job-cancel", f"job {job.pk}")]


def test_the_admins_machine_orders_are_recorded(admin_client, machine):
    for action in ("drain", "kill"):
        admin_client.post("/admin/distributor/machine/", {"action": action, "_selected_action": [machine.pk]})
    assert _actions() == [("root-admin", "drain", f"machines {machine.pk}"), ("root-admin", "kill", f"machines {machine.pk}")]


def test_targets_added_changed_and_deleted_in_the_admin_are_recorded(admin_client, db):
    form = {"name": "pool", "kind": "stdio", "settings": "{}", "addresses": "", "host": ""}
    assert admin_client.post("/admin/distributor/target/add/", form).status_code == 302
    target = Target.objects.get(name="pool")
    admin_client.post(f"/admin/distributor/target/{target.pk}/change/", {**form, "host": "h2"})
    admin_client.post(f"/admin/distributor/target/{target.pk}/delete/", {"post": "yes"})
    assert not Target.objects.filter(name="pool").exists()
    assert _actions() == [("root-admin", "target-add", "pool"), ("root-admin", "target-edit", "pool"),
                          ("root-admin", "target-remove", "pool")]
    assert AuditEntry.objects.get(action="target-edit").changes == {"host": ["", "h2"]}


def test_hosts_campaigns_and_notifications_are_registered_and_their_state_read_only(admin_client, machine):
    from distributor.campaigns.models import Campaign

    host = Host.objects.create(name="h1", capacity=2)
    campaign = Campaign.objects.create(name="c", kind="random", target=machine.target, seed=1, params={})
    job = Job.objects.create(name="j", target=machine.target, spec={"tasksets": []}, variant_count=5, cursor=0)
    note = Notification.objects.create(job=job, url="https://example.org/hook")
    for url in (f"/admin/distributor/host/{host.pk}/change/", f"/admin/campaigns/campaign/{campaign.pk}/change/",
                f"/admin/distributor/notification/{note.pk}/change/", "/admin/campaigns/campaignset/", "/admin/campaigns/campaignlevel/"):
        assert admin_client.get(url).status_code == 200, url
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    for field in ("state", "level", "params", "seed", "target"):
        assert f'name="{field}"' not in page, field
    admin_client.post(f"/admin/campaigns/campaign/{campaign.pk}/change/", {"name": "c2", "state": "ended"})
    campaign.refresh_from_db()
    assert (campaign.name, campaign.state) == ("c2", Campaign.State.RUNNING)
    admin_client.post(f"/admin/distributor/host/{host.pk}/change/", {"name": "h1", "capacity": "9"})
    host.refresh_from_db()
    assert host.capacity == 2


def test_execution_time_models_are_registered_and_read_only(admin_client, db):
    from distributor.models import EtmModel, EtmVersion

    versions = EtmVersion.objects.count()
    version = EtmModel.add_version("slow", {"packages": {"hey": {"base_ms": 1, "per_arg_ms": 0}}, "default": {"base_ms": 1, "per_arg_ms": 0}})
    model = EtmModel.objects.get(name="slow")
    for url in (f"/admin/distributor/etmmodel/{model.pk}/change/", f"/admin/distributor/etmversion/{version.pk}/change/",
                "/admin/distributor/calibration/"):
        assert admin_client.get(url).status_code == 200, url
    admin_client.post(f"/admin/distributor/etmversion/{version.pk}/change/", {"note": "edited", "document": "{}"})
    version.refresh_from_db()
    assert version.note != "edited" and version.document != {}
    assert admin_client.get("/admin/distributor/etmversion/add/").status_code == 403
    assert EtmVersion.objects.count() == versions + 1


def test_the_admin_puts_slots_into_maintenance_and_back_through_the_reconciler(admin_client, machine):
    from distributor.models import Slot

    slot = Slot.of(machine.target, 0)
    admin_client.post("/admin/distributor/slot/", {"action": "maintenance", "_selected_action": [slot.pk]})
    slot.refresh_from_db()
    assert slot.health == Slot.Health.MAINTENANCE and "root-admin" in slot.cause
    admin_client.post("/admin/distributor/slot/", {"action": "healthy", "_selected_action": [slot.pk]})
    slot.refresh_from_db()
    assert slot.health == Slot.Health.HEALTHY
    assert [a for _, a, _ in _actions()] == ["slot-maintenance", "slot-healthy"]
    page = admin_client.get(f"/admin/distributor/slot/{slot.pk}/change/").content.decode()
    assert 'name="health"' not in page


@pytest.mark.usefixtures("no_broker")
def test_the_settings_row_sets_the_machine_count_through_the_reconciler_and_records_it(admin_client, db, settings):
    from distributor.models import DistributorConfig

    config = DistributorConfig.get()
    form = {"max_machines": "3", "default_tries": "5", "heartbeat_timeout_s": "30", "launch_timeout_s": "120",
            "target_timeout_s": "40", "idle_timeout_s": "30", "quarantine_after": "3"}
    form = {key: value for key, value in form.items() if hasattr(config, key)}
    response = admin_client.post(f"/admin/distributor/distributorconfig/{config.pk}/change/", {**form, "halted": "on"})
    assert response.status_code == 302, response.content.decode()[:3000]
    config.refresh_from_db()
    assert (config.max_machines, config.default_tries, config.halted) == (3, 5, False)
    assert {a: c for _, a, _ in _actions() for c in [AuditEntry.objects.get(action=a).changes]} == {
        "settings": {"default_tries": [3, 5]}, "max": {"max_machines": [1, 3]}}
    too_many = admin_client.post(f"/admin/distributor/distributorconfig/{config.pk}/change/",
                                 {**form, "max_machines": str(settings.DISTRIBUTOR_CAP + 1)})
    assert too_many.status_code == 200 and "must be between 1 and" in too_many.content.decode()
    config.refresh_from_db()
    assert config.max_machines == 3


@pytest.mark.parametrize("model, action", [(Binary, "binary-remove"), (BootImage, "image-remove")])
def test_deleting_an_upload_in_the_admin_is_recorded(admin_client, media, model, action):
    item, _ = model.store("hey", SimpleUploadedFile("hey", b"bytes"))
    admin_client.post(f"/admin/distributor/{model._meta.model_name}/{item.pk}/delete/", {"post": "yes"})
    assert not model.objects.exists()
    assert _actions() == [("root-admin", action, "hey")]
