"""The audit trail: every operator action stored with who, when and what changed."""
from __future__ import annotations

import io
import json
import re
from datetime import date
from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from distributor.audit import cli_actor, record
from distributor.models import AuditEntry, Target
from distributor.queue import submit_job
from tests.conftest import taskset_file
from webapp.models import ApiToken

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


# -- every operator action, on every path, with its user ---------------------------------



def trail() -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.subject) for e in AuditEntry.objects.order_by("at", "id")]


@pytest.fixture
def job(stdio_target):
    return submit_job(taskset_file(), target=stdio_target, name="audited")


@pytest.fixture
def cli_login():
    with mock.patch("getpass.getuser", return_value="opsbot"):
        yield "cli:opsbot"


@pytest.mark.usefixtures("no_broker")
def test_the_dashboards_controls_are_recorded_with_the_user(client, staff):
    client.force_login(staff)
    client.post("/distributor/max", {"max_machines": "3"})
    for action in ("shutdown", "kill", "resume", "reboot"):
        client.post(f"/distributor/{action}")
    assert trail() == [("sam", "max", "max machines"), ("sam", "shutdown", "all machines"),
                       ("sam", "kill", "all machines"), ("sam", "resume", "all machines"),
                       ("sam", "reboot", "all machines")]
    assert AuditEntry.objects.get(action="max").changes == {"max_machines": [1, 3]}


@pytest.mark.usefixtures("no_broker")
def test_a_refused_control_records_nothing(client, staff, alice):
    client.force_login(staff)
    assert client.post("/distributor/max", {"max_machines": "0"}).status_code == 400
    client.force_login(alice)
    assert client.post("/distributor/kill").status_code == 403
    assert trail() == []


@pytest.mark.usefixtures("no_broker")
def test_the_apis_controls_and_job_actions_are_recorded_with_the_user(client, staff, job):
    headers = {"Authorization": f"Bearer {ApiToken.issue(staff, 'ops')[1]}"}
    post = lambda url, body=None: client.post(url, json.dumps(body or {}), content_type="application/json",  # noqa: E731
                                               headers=headers)
    assert post("/api/distributor", {"max_machines": 2}).status_code == 200
    assert post("/api/distributor/reboot").status_code == 200
    assert post(f"/api/jobs/{job.pk}/priority", {"priority": 7}).status_code == 200
    assert post(f"/api/jobs/{job.pk}/cancel").status_code == 200
    new = post(f"/api/jobs/{job.pk}/resubmit").json()["id"]
    assert trail() == [("sam", "max", "max machines"), ("sam", "reboot", "all machines"),
                       ("sam", "job-priority", f"job {job.pk}"), ("sam", "job-cancel", f"job {job.pk}"),
                       ("sam", "job-resubmit", f"job {job.pk}")]
    assert AuditEntry.objects.get(action="job-priority").changes == {"priority": [0, 7]}
    assert AuditEntry.objects.get(action="job-resubmit").changes == {"new_job": new}


def test_the_job_pages_cancel_and_resubmit_are_recorded(client, alice, job):
    job.owner = alice
    job.save(update_fields=["owner"])
    client.force_login(alice)
    client.post(f"/jobs/{job.pk}/cancel")
    client.post(f"/jobs/{job.pk}/resubmit")
    assert trail() == [("alice", "job-cancel", f"job {job.pk}"), ("alice", "job-resubmit", f"job {job.pk}")]


@pytest.mark.usefixtures("no_broker")
def test_the_command_line_records_cli_login_and_audit_prints_it(cli_login, job, tmp_path):
    out = io.StringIO()
    call_command("distributor", "max", "2", stdout=out)
    for action in ("shutdown", "kill", "resume", "reboot"):
        call_command("distributor", action, stdout=out)
    call_command("jobs", "priority", str(job.pk), "5", stdout=out)
    call_command("jobs", "cancel", str(job.pk), stdout=out)
    call_command("jobs", "resubmit", str(job.pk), stdout=out)
    call_command("target", "add", "boards", "--kind", "stdio", stdout=out)
    call_command("target", "remove", "boards", stdout=out)
    (tmp_path / "hey").write_bytes(b"\x7fELF-one")
    call_command("binary", "add", str(tmp_path / "hey"), stdout=out)
    (tmp_path / "hey").write_bytes(b"\x7fELF-two")
    call_command("binary", "add", str(tmp_path / "hey"), stdout=out)
    expected = ["max", "shutdown", "kill", "resume", "reboot", "job-priority", "job-cancel", "job-resubmit",
                "target-add", "target-remove", "binary-upload", "binary-upload"]
    assert trail() == [(cli_login, action, subject) for action, subject in zip(expected, [
        "max machines", *["all machines"] * 4, *[f"job {job.pk}"] * 3, "boards", "boards", "hey", "hey"])]
    uploads = [e.changes for e in AuditEntry.objects.filter(action="binary-upload").order_by("id")]
    assert [u["replaced"] for u in uploads] == [False, True] and uploads[0]["sha256"] != uploads[1]["sha256"]

    out = io.StringIO()
    call_command("distributor", "audit", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert [(row["actor"], row["action"]) for row in printed] == [(cli_login, action) for action in expected]
    out = io.StringIO()
    call_command("distributor", "audit", stdout=out)
    assert f"{cli_login}  max max machines" in out.getvalue() and "job-resubmit" in out.getvalue()


def test_audit_since_keeps_later_actions_and_refuses_a_bad_date(db):
    record("alice", "kill")
    AuditEntry.objects.filter(action="kill").update(at="2020-01-01T00:00:00Z")
    record("alice", "resume")
    out = io.StringIO()
    call_command("distributor", "audit", "--json", "--since", "2021-01-01", stdout=out)
    assert [row["action"] for row in json.loads(out.getvalue())] == ["resume"]
    with pytest.raises(CommandError, match="--since: '5th of May' is not a date"):
        call_command("distributor", "audit", "--since", "5th of May")


def test_the_relabel_command_is_recorded(cli_login, stdio_target):
    from tests.test_relabel import finished_job

    job = finished_job(stdio_target, 2)
    with mock.patch("sys.stderr", io.StringIO()):
        call_command("relabel", "--job", str(job.pk), "--workers", "1", stdout=io.StringIO())
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.subject) == (cli_login, "relabel", f"jobs {job.pk}")
    assert entry.changes["tasksets"] == 2


def test_the_target_and_upload_pages_are_recorded(client, staff, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(staff)
    form = {"name": "lab", "kind": "stdio", "settings": "{}", "addresses": "", "host": ""}
    assert client.post("/targets/new", form).status_code == 302
    target = Target.objects.get(name="lab")
    client.post(f"/targets/{target.pk}/edit", {**form, "settings": '{"print": false}'})
    client.post("/files/binaries", {"file": SimpleUploadedFile("hey", b"\x7fELF"), "name": ""})
    client.post("/files/images", {"file": SimpleUploadedFile("boot.img", b"image"), "name": ""})
    assert trail() == [("sam", "target-add", "lab"), ("sam", "target-edit", "lab"),
                       ("sam", "binary-upload", "hey"), ("sam", "image-upload", "boot.img")]
    assert AuditEntry.objects.get(action="target-edit").changes == {"settings": [{}, {"print": False}]}
    assert AuditEntry.objects.get(action="image-upload").changes["size"] == 5


# -- where the trail is read ----------------------------------------------------------


def test_the_audit_page_is_for_staff_and_filters(client, staff, alice):
    record("sam", "kill", "all machines", {"machines": 2})
    record("cli:root", "max", "max machines", {"max_machines": [1, 4]})
    client.force_login(alice)
    assert client.get("/audit/").status_code == 403
    client.force_login(staff)
    page = client.get("/audit/").content.decode()
    assert "cli:root" in page and "kill" in page and "[1, 4]" in page
    page = client.get("/audit/?action=kill").content.decode()
    assert "cli:root" not in page and "sam" in page
    response = client.get("/audit/?since=yesterday")
    assert response.status_code == 400 and "Since:" in response.content.decode()


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_a_since_beyond_the_calendar_in_utc_is_refused_everywhere(client, staff, since):
    # A valid date-time whose offset moves it past year 9999 (or before year 1)
    # in UTC overflowed when the query was built: a 500 on the page and the API.
    client.force_login(staff)
    page = client.get("/audit/", {"since": since})
    assert page.status_code == 400 and "out of range" in page.content.decode()
    headers = {"Authorization": f"Bearer {ApiToken.issue(staff, 'ops')[1]}"}
    response = client.get("/api/audit", {"since": since}, headers=headers)
    assert response.status_code == 400 and "out of range" in response.json()["errors"]["since"]
    with pytest.raises(CommandError, match=f"^--since: '{re.escape(since)}' is out of range"):
        call_command("distributor", "audit", "--since", since)


@pytest.mark.usefixtures("no_broker")
def test_the_dashboard_shows_recent_actions_to_staff(client, staff, alice):
    client.force_login(staff)
    client.post("/distributor/reboot")
    fragment = client.get("/dashboard/live").content.decode()
    assert 'id="recent-actions"' in fragment and "reboot" in fragment
    client.force_login(alice)
    assert 'id="recent-actions"' not in client.get("/dashboard/live").content.decode()


def test_the_api_lists_the_trail_to_staff(client, staff, alice):
    record("sam", "kill", "all machines")
    AuditEntry.objects.update(at="2020-01-01T00:00:00Z")
    record("cli:root", "reboot", "all machines", {"machines": 3})
    staff_headers = {"Authorization": f"Bearer {ApiToken.issue(staff, 'ops')[1]}"}
    rows = client.get("/api/audit", headers=staff_headers).json()["results"]
    assert [(r["actor"], r["action"]) for r in rows] == [("cli:root", "reboot"), ("sam", "kill")]
    assert rows[0]["changes"] == {"machines": 3}
    assert [r["action"] for r in client.get("/api/audit?since=2021-01-01", headers=staff_headers).json()["results"]
            ] == ["reboot"]
    bad = client.get("/api/audit?since=soon", headers=staff_headers)
    assert bad.status_code == 400 and "since" in bad.json()["errors"]
    assert client.get("/api/audit?limit=0", headers=staff_headers).status_code == 400
    alice_headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}
    assert client.get("/api/audit", headers=alice_headers).status_code == 403


def test_the_admin_shows_the_trail_read_only(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root-admin", password="root-admin-password-1"))
    record("sam", "kill")
    entry = AuditEntry.objects.get()
    assert client.get("/admin/distributor/auditentry/").status_code == 200
    assert "sam" in client.get("/admin/distributor/auditentry/").content.decode()
    assert client.get("/admin/distributor/auditentry/add/").status_code == 403
    assert client.post(f"/admin/distributor/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"/admin/distributor/auditentry/{entry.pk}/change/", {"action": "resume"})
    assert AuditEntry.objects.get().action == "kill"


def test_campaign_stop_and_continue_are_recorded_from_the_command_the_web_and_the_api(cli_login, client, alice):
    from tests.test_campaign_pages import dry_target, grow

    campaign = grow(dry_target("dry"))
    call_command("campaign", "stop", str(campaign.pk), "--cancel-level", stdout=io.StringIO())
    call_command("campaign", "continue", str(campaign.pk), stdout=io.StringIO())
    campaign.owner = alice
    campaign.save(update_fields=["owner"])
    client.force_login(alice)
    client.post(f"/campaigns/{campaign.pk}/stop")
    client.post(f"/campaigns/{campaign.pk}/continue")
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}
    client.post(f"/api/campaigns/{campaign.pk}/stop", headers=headers)
    client.post(f"/api/campaigns/{campaign.pk}/continue", headers=headers)
    subject = f"campaign {campaign.pk}"
    assert trail() == [(cli_login, "campaign-stop", subject), (cli_login, "campaign-continue", subject),
                       ("alice", "campaign-stop", subject), ("alice", "campaign-continue", subject),
                       ("alice", "campaign-stop", subject), ("alice", "campaign-continue", subject)]


def test_the_admins_taskset_actions_are_recorded(client, django_user_model, stdio_target):
    from distributor.models import TaskSet
    from tests.test_relabel import finished_job

    client.force_login(django_user_model.objects.create_superuser("root-admin", password="root-admin-password-1"))
    job = finished_job(stdio_target, 1)
    taskset = TaskSet.objects.get(job=job)
    TaskSet.objects.filter(pk=taskset.pk).update(state=TaskSet.State.BAD)
    client.post("/admin/distributor/taskset/", {"action": "requeue_bad", "_selected_action": [taskset.pk]})
    taskset.refresh_from_db()
    assert taskset.state == TaskSet.State.QUEUED
    client.post("/admin/distributor/taskset/", {"action": "mark_queued_bad", "_selected_action": [taskset.pk]})
    assert trail() == [("root-admin", "taskset-requeue", f"task-sets {taskset.pk}"),
                       ("root-admin", "taskset-bad", f"task-sets {taskset.pk}")]
