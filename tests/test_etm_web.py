"""Execution-time models on the web and in the API (issue 14, points 1-4):
the model pages and plots, the target form's etm and Calibrate, the job
page's labels panel and Relabel, and the API routes of webapp/api/etm.py."""
from __future__ import annotations

import json

import pytest

from distributor.models import AuditEntry, Calibration, EtmModel, Target, TaskSet
from tests.test_etm_models import MEASURED, finished_calibration_job
from webapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def fitted(stdio_target):
    """A finished job on the stdio target and a model calibrated on it from that job."""
    from distributor import calibration

    job = finished_calibration_job(stdio_target, {1: [44, 41], 2: [85]})
    calibration.fit([job.pk], "board-a")
    return job


def api(client, method: str, url: str, user, body=None):
    token = ApiToken.issue(user, "t")[1]
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)


# -- pages --------------------------------------------------------------------------


def test_the_model_pages_show_versions_targets_and_a_plot_per_package(client, alice, fitted, stdio_target):
    Target.objects.filter(pk=stdio_target.pk).update(settings={"print": False, "etm": "board-a"})
    client.force_login(alice)
    listing = client.get("/etm/").content.decode()
    assert "board-a" in listing and "genode-defaults" in listing and "calibrated" in listing
    page = client.get("/etm/board-a/").content.decode()
    assert "calibrated on <strong>dry</strong>" in page and f"#{fitted.pk}" in page
    assert 'id="etm-targets">dry<' in page and "/etm/board-a/pi.svg?version=1" in page
    svg = client.get("/etm/board-a/pi.svg")
    assert svg["Content-Type"] == "image/svg+xml"
    text = svg.content.decode()
    assert text.count('class="point"') == 2 and 'class="line"' in text and "arg1 1: 44 ms (n=2" in text
    assert "attachment" in client.get("/etm/board-a/pi.svg?download=1")["Content-Disposition"]
    assert client.get("/etm/nope/").status_code == 404
    assert client.get("/etm/board-a/linpack.svg").status_code == 404
    assert client.get("/etm/board-a/?version=9").status_code == 404
    defaults = client.get("/etm/genode-defaults/").content.decode()
    assert "typed in (not measured)" in defaults and "no line" not in defaults


def test_the_target_form_sets_the_model_and_refuses_an_unknown_one(client, staff, stdio_target):
    EtmModel.add_version("board-a", MEASURED)
    client.force_login(staff)
    form = {"name": "dry", "kind": "stdio", "settings": '{"print": false}', "addresses": "", "host": ""}
    response = client.post(f"/targets/{stdio_target.pk}/edit", {**form, "etm": "board-a"})
    assert response.status_code == 302
    assert Target.objects.get(pk=stdio_target.pk).settings == {"print": False, "etm": "board-a"}
    response = client.post(f"/targets/{stdio_target.pk}/edit", {**form, "settings": '{"etm": "nope"}'})
    assert response.status_code == 400 and "no execution-time model named" in response.content.decode()
    assert Target.objects.get(pk=stdio_target.pk).settings["etm"] == "board-a"


def test_calibrate_from_the_target_page_queues_a_calibration_job(client, staff, alice, stdio_target):
    client.force_login(staff)
    page = client.get(f"/targets/{stdio_target.pk}/edit").content.decode()
    assert 'id="calibrate"' in page
    response = client.post(f"/targets/{stdio_target.pk}/calibrate",
                           {"pkg": "pi,hey", "args": "0:2", "jobs": "3", "name": "board-b"})
    calibration = Calibration.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{calibration.job_id}/"
    assert (calibration.model_name, calibration.job.target_id, calibration.job.variant_count) == ("board-b",
                                                                                                 stdio_target.pk, 6)
    bad = client.post(f"/targets/{stdio_target.pk}/calibrate", {"pkg": "pi", "args": "5:1", "jobs": "3",
                                                                 "name": "board-b"})
    assert bad.status_code == 400 and 'data-field="args"' in bad.content.decode()
    assert Calibration.objects.count() == 1
    entry = AuditEntry.objects.get(action="etm-calibrate")
    assert (entry.actor, entry.subject, entry.changes["model"], entry.changes["job"]) == (
        "sam", "target dry", "board-b", calibration.job_id)
    client.force_login(alice)
    assert client.post(f"/targets/{stdio_target.pk}/calibrate", {"pkg": "pi", "args": "1:1", "jobs": "1",
                                                                  "name": "x"}).status_code == 403


def test_the_job_page_names_the_model_and_offers_the_calibrated_one(client, staff, alice, fitted):
    TaskSet.objects.filter(job=fitted).update(analysis=None)
    from distributor.labels import relabel

    relabel([fitted.pk])  # the target's own: genode-defaults
    client.force_login(alice)  # neither owner nor staff: sees, cannot relabel
    page = client.get(f"/jobs/{fitted.pk}/").content.decode()
    assert "<strong>genode-defaults</strong> v1</a>\n      (not calibrated on dry, 2 task-sets)" in page
    assert "board-a v1</a> was calibrated on dry" in page and "Relabel with" not in page
    assert client.post(f"/jobs/{fitted.pk}/relabel", {"etm": "board-a"}).status_code == 403
    client.force_login(staff)
    assert "Relabel with board-a v1" in client.get(f"/jobs/{fitted.pk}/").content.decode()
    response = client.post(f"/jobs/{fitted.pk}/relabel", {"etm": "board-a"}, follow=True)
    page = response.content.decode()
    assert "Relabelled 2 task-sets with board-a v1" in page
    assert "(calibrated on dry, 2 task-sets)" in page and "Relabel with" not in page
    assert {ts.analysis["etm"]["calibrated"] for ts in fitted.tasksets.all()} == {True}
    entry = AuditEntry.objects.get(action="relabel")
    assert (entry.actor, entry.subject, entry.changes["etm"], entry.changes["tasksets"]) == (
        "sam", f"jobs {fitted.pk}", "board-a", 2)
    assert "Nothing relabelled: etm: no execution-time model named" in client.post(
        f"/jobs/{fitted.pk}/relabel", {"etm": "nope"}, follow=True).content.decode()
    # A NUL reached the model's lookup: a 500 on PostgreSQL.
    assert "Nothing relabelled: etm: no execution-time model named" in client.post(
        f"/jobs/{fitted.pk}/relabel", {"etm": "board-a\x00"}, follow=True).content.decode()


# -- the API ------------------------------------------------------------------------


def test_the_api_lists_shows_imports_and_exports_models(client, alice, staff, fitted):
    listed = {row["name"]: row for row in api(client, "get", "/api/etms", alice).json()["results"]}
    assert listed["board-a"]["calibrated"] and listed["board-a"]["target"] == "dry"
    shown = api(client, "get", "/api/etms/board-a", alice).json()
    assert shown["versions"][0]["jobs"] == [fitted.pk] and shown["versions"][0]["source"] == "calibrated"
    exported = api(client, "get", "/api/etms/board-a/export", alice)
    assert exported.json()["packages"]["pi"]["points"]["1"]["ms"] == 44
    assert api(client, "get", "/api/etms/board-a/export?version=7", alice).status_code == 404
    assert api(client, "get", "/api/etms/nope", alice).status_code == 404
    assert api(client, "post", "/api/etms", alice, {"document": MEASURED}).status_code == 403
    created = api(client, "post", "/api/etms", staff, {"name": "typed", "document": MEASURED})
    assert created.status_code == 201 and created.json()["version"] == 1 and not created.json()["calibrated"]
    bad = api(client, "post", "/api/etms", staff, {"document": {**MEASURED, "default": {"base_ms": -1}}})
    assert bad.status_code == 400 and "default.base_ms" in bad.json()["errors"]["document"]


def test_the_api_fits_calibrates_relabels_and_edits_a_target(client, alice, staff, stdio_target, fitted):
    fit = api(client, "post", "/api/etms/board-a/fit", staff, {"jobs": [fitted.pk]})
    assert fit.status_code == 201 and fit.json()["version"] == 2
    assert api(client, "post", "/api/etms/board-a/fit", staff, {"jobs": [99999]}).json()["errors"] == {
        "jobs": "no job 99999"}
    queued = api(client, "post", "/api/etms/board-c/calibrate", staff,
                 {"target": "dry", "pkg": ["pi"], "args": "1:4", "jobs": 2})
    assert queued.status_code == 202 and Calibration.objects.get(job_id=queued.json()["job"]).model_name == "board-c"
    refused = api(client, "post", "/api/etms/board-c/calibrate", staff, {"target": "dry", "pkg": "pi", "args": "x"})
    assert refused.status_code == 400 and "args" in refused.json()["errors"]
    assert api(client, "post", "/api/etms/board-c/calibrate", alice,
               {"target": "dry", "pkg": "pi", "args": "1:2"}).status_code == 403
    relabelled = api(client, "post", f"/api/jobs/{fitted.pk}/relabel", staff, {"etm": "board-a"})
    assert relabelled.json() == {"job": fitted.pk, "relabelled": 2, "etm": [{"name": "board-a", "version": 2}]}
    assert api(client, "post", f"/api/jobs/{fitted.pk}/relabel", alice, {"etm": "board-a"}).status_code == 403
    assert api(client, "post", f"/api/jobs/{fitted.pk}/relabel", staff, {"etm": "nope"}).status_code == 400
    # the target's model through the targets API (its TargetForm checks the name)
    edited = api(client, "patch", f"/api/targets/{stdio_target.pk}", staff,
                 {"settings": {"print": False, "etm": "board-a"}})
    assert edited.status_code == 200 and edited.json()["settings"]["etm"] == "board-a"
    wrong = api(client, "patch", f"/api/targets/{stdio_target.pk}", staff, {"settings": {"etm": "nope"}})
    assert wrong.status_code == 400 and "no execution-time model named" in wrong.json()["errors"]["settings"]
    assert Target.objects.get(name="dry").settings["etm"] == "board-a"


def test_a_job_too_large_to_relabel_in_a_request_is_sent_to_the_command_line(client, staff, fitted, monkeypatch):
    monkeypatch.setattr("distributor.labels.REQUEST_RELABEL_MAX", 1)
    monkeypatch.setattr("webapp.api.etm.REQUEST_RELABEL_MAX", 1)
    monkeypatch.setattr("webapp.views.etm.REQUEST_RELABEL_MAX", 1)
    refused = api(client, "post", f"/api/jobs/{fitted.pk}/relabel", staff, {"etm": "board-a"})
    assert refused.status_code == 400 and f"manage.py relabel --job {fitted.pk}" in refused.json()["errors"]["job"]
    client.force_login(staff)
    page = client.post(f"/jobs/{fitted.pk}/relabel", {"etm": "board-a"}, follow=True).content.decode()
    assert "Nothing relabelled: 2 ended task-sets" in page
    assert not AuditEntry.objects.filter(action="relabel").exists()
