"""The JSON API: token and session auth, submission by JSON or multipart,
errors that name the field with a 4xx status, results and control."""
from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from bench.web_pages import build
from distributor.models import DistributorConfig, Job
from webapp.models import ApiToken, hash_token

EXAMPLE = json.load(open("fixtures/example5.json"))


def _call(client, method: str, url: str, token: str | None = None, body=None, **extra):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, headers=headers, **kwargs, **extra)


def test_only_a_hash_of_a_token_is_stored(alice):
    record, clear = ApiToken.issue(alice, "script")
    assert clear.startswith("dst_") and len(clear) > 40
    assert record.token_hash == hash_token(clear) and clear not in (record.token_hash, record.prefix)
    assert ApiToken.authenticate(clear) == alice


def test_a_token_authenticates(client, token):
    response = _call(client, "get", "/api/status", token)
    assert response.status_code == 200
    assert response.json()["state"] in ("busy", "idle", "halted")
    assert ApiToken.objects.get().last_used_at is not None


@pytest.mark.parametrize("header", ["Bearer dst_not-a-real-token", "Bearer", "Basic YWxpY2U6eA==", "token"])
def test_a_bad_token_gets_401(client, db, header):
    response = client.get("/api/status", headers={"Authorization": header})
    assert response.status_code == 401
    assert "authorization" in response.json()["errors"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_gets_401(client, token):
    ApiToken.objects.all().delete()
    assert _call(client, "get", "/api/status", token).status_code == 401


def test_no_credentials_get_401(client, db):
    assert client.get("/api/jobs").status_code == 401


def test_a_session_may_read_but_must_send_the_csrf_token_to_write(client, alice, stdio_target):
    client = type(client)(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/jobs").status_code == 200
    response = _call(client, "post", "/api/jobs", body={"spec": EXAMPLE, "target": "dry"})
    assert response.status_code == 403 and "csrf" in response.json()["errors"]
    assert Job.objects.count() == 0


def test_submit_a_spec_as_json(client, token, alice, stdio_target):
    response = _call(client, "post", "/api/jobs", token, body={"spec": EXAMPLE, "target": "dry", "priority": 2,
                                                               "admission": {"goal": "u", "max": 0.9}})
    assert response.status_code == 201
    job = Job.objects.get()
    body = response.json()
    assert (body["id"], body["variant_count"], body["owner"], body["target"]) == (job.pk, 8, "alice", "dry")
    assert body["progress"]["queued"] == 8 and body["progress"]["percent"] == 0.0
    assert body["links"]["exports"]["taskjobs-csv"].endswith(f"/jobs/{job.pk}/export/taskjobs-csv")
    assert (job.owner, job.priority, job.admission) == (alice, 2, {"goal": "u", "max": 0.9})


def test_submit_a_file_as_multipart(client, token, stdio_target):
    upload = SimpleUploadedFile("example5.yaml", open("fixtures/example5.yaml", "rb").read())
    response = client.post("/api/jobs", {"file": upload, "target": "dry", "offset": "1", "tries": "5"},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.content
    job = Job.objects.get()
    assert (job.source_name, job.offset, job.tries, job.total) == ("example5.yaml", 1, 5, job.variant_count - 1)


def test_submit_the_text_of_a_genode_xml_file(client, token, stdio_target):
    xml = open("fixtures/hey.xml").read()
    response = _call(client, "post", "/api/jobs", token, body={"file": xml, "filename": "hey.xml", "target": "dry"})
    assert response.status_code == 201
    assert response.json()["variant_count"] == 1


@pytest.mark.parametrize("body, field", [
    ({"spec": EXAMPLE, "offset": "ten"}, "offset"),
    ({"spec": EXAMPLE, "tries": True}, "tries"),
    ({"spec": EXAMPLE, "priority": 1.5}, "priority"),
    ({"spec": EXAMPLE, "admission": [1, 2]}, "admission"),
    ({"spec": EXAMPLE, "monitors": "logging"}, "monitors"),
    ({"spec": EXAMPLE, "target": 3}, "target"),
    ({"spec": EXAMPLE, "target": "nowhere"}, "target"),
    ({"spec": EXAMPLE, "offset": 8}, "offset"),
    ({"spec": EXAMPLE, "colour": "red"}, "colour"),
    ({"spec": [1, 2]}, "spec"),
    ({"file": 12}, "file"),
    ({}, "spec"),
    ({"spec": {"tasksets": [{"tasks": [{"pkg": "x" * 20}]}]}}, "file"),
])
def test_bad_input_gets_400_naming_the_field(client, token, stdio_target, body, field):
    response = _call(client, "post", "/api/jobs", token, body=body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert Job.objects.count() == 0


def test_file_errors_carry_their_paths(client, token, stdio_target):
    spec = {"tasksets": [{"tasks": [{"pkg": "hey", "period": -5}, {"pkg": "hey", "colour": 1}]}]}
    body = _call(client, "post", "/api/check", token, body={"spec": spec}).json()
    paths = [error["path"] for error in body["file_errors"]]
    assert paths == ["tasksets[0].tasks[0].period", "tasksets[0].tasks[1].colour"]
    assert "tasksets[0].tasks[0].period" in body["errors"]["file"]


@pytest.mark.parametrize("raw, content_type", [(b"{not json", "application/json"), (b"[]", "application/json"),
                                               (b"spec=1", "text/plain")])
def test_a_body_that_is_not_an_object_is_refused(client, token, db, raw, content_type):
    response = client.post("/api/check", raw, content_type=content_type, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (400, 415)
    assert set(response.json()["errors"]) & {"body", "content_type"}


def test_check_reports_the_variant_count_and_stores_nothing(client, token, stdio_target):
    response = _call(client, "post", "/api/check", token, body={"spec": EXAMPLE, "target": "dry", "offset": 3})
    assert response.status_code == 200
    assert response.json() == {"valid": True, "variant_count": 8, "format": "json", "tasksets": 1, "runs": 5}
    assert Job.objects.count() == 0


@pytest.mark.parametrize("name, message", [("two\nlines", "control characters"), ("n" * 201, "at most 200")])
def test_check_refuses_the_name_a_submission_would_refuse(client, token, stdio_target, name, message):
    """One check of a job's options: what the check passes, queueing accepts."""
    for route in ("/api/check", "/api/jobs"):
        response = _call(client, "post", route, token, body={"spec": EXAMPLE, "target": "dry", "name": name})
        assert response.status_code == 400 and message in response.json()["errors"]["name"], (route, response.content)
    assert Job.objects.count() == 0


def test_job_status_and_task_set_results(client, token, alice):
    data = build(40, 2, owner=alice)
    job = data["job"]
    body = _call(client, "get", f"/api/jobs/{job.pk}", token).json()
    assert body["state"] == "running"
    assert body["progress"]["running"] == 2 and body["progress"]["total"] == 40
    assert body["progress"]["rate_per_min"] > 0 and body["progress"]["eta_s"] > 0
    page = _call(client, "get", f"/api/jobs/{job.pk}/tasksets?state=finished&page_size=5", token).json()
    assert page["count"] == job.finished_count and len(page["results"]) == 5
    first = page["results"][0]
    detail = _call(client, "get", f"/api/tasksets/{first['id']}", token).json()
    assert [t["id"] for t in detail["tasks"]] == [0, 1, 2]
    assert len(detail["taskjobs"]) == 12 and detail["taskjobs"][0]["exit_type"] in ("EXIT", "EXIT_PERIOD")
    assert detail["taskjobs_truncated"] is False


def test_a_task_sets_first_miss_and_deadlines_are_in_the_api(client, token, alice):
    data = build(4, 0, owner=alice)
    taskset = data["job"].tasksets.filter(state="finished").first()
    taskset.taskjobs.filter(job_number=0).update(deadline_abs_ms=100, deadline_met=False)
    type(taskset).objects.filter(pk=taskset.pk).update(
        outcome="unschedulable", first_miss_task=0, first_miss_job=0, first_miss_kind="EXIT_PERIOD", first_miss_ms=100)
    detail = _call(client, "get", f"/api/tasksets/{taskset.pk}", token).json()
    assert detail["outcome"] == "unschedulable"
    assert detail["first_miss"] == {"task": 0, "job": 0, "kind": "EXIT_PERIOD", "at_ms": 100}
    missed = [j for j in detail["taskjobs"] if j["deadline_met"] is False]
    assert missed and all(j["deadline_abs_ms"] == 100 for j in missed)
    schedulable = _call(client, "get", f"/api/jobs/{data['job'].pk}/tasksets?outcome=schedulable", token).json()
    assert all(row["first_miss"] is None for row in schedulable["results"])


@pytest.mark.parametrize("query, field", [("state=lost", "state"), ("page=0", "page"), ("page_size=9999", "page_size"),
                                          ("outcome=maybe", "outcome")])
def test_bad_query_parameters_get_400(client, token, alice, query, field):
    job = build(3, 1, owner=alice)["job"]
    response = _call(client, "get", f"/api/jobs/{job.pk}/tasksets?{query}", token)
    assert response.status_code == 400 and field in response.json()["errors"]


@pytest.mark.parametrize("url", ["/api/jobs/999", "/api/jobs/99999999999999999999999", "/api/tasksets/5",
                                 "/api/distributor/explode"])
def test_unknown_objects_get_404(client, staff_token, url):
    response = _call(client, "post" if "distributor" in url else "get", url, staff_token)
    assert response.status_code == 404
    assert response.json()["errors"]


def test_only_the_owner_or_staff_cancel(client, alice, staff, token, staff_token, django_user_model):
    job = build(3, 0, owner=alice)["queued"][0]
    bob = django_user_model.objects.create_user("bob")
    _, bobs = ApiToken.issue(bob, "x")
    assert _call(client, "post", f"/api/jobs/{job.pk}/cancel", bobs).status_code == 403
    response = _call(client, "post", f"/api/jobs/{job.pk}/cancel", token)
    assert response.status_code == 200 and response.json()["cancelled"] is True
    assert Job.objects.get(pk=job.pk).state == Job.State.CANCELLED
    copy = _call(client, "post", f"/api/jobs/{job.pk}/resubmit", bobs)
    assert copy.status_code == 201 and copy.json()["owner"] == "bob"


def test_staff_control_the_distributor(client, staff_token):
    response = _call(client, "post", "/api/distributor", staff_token, body={"max_machines": 4})
    assert response.status_code == 200 and response.json()["max_machines"] == 4
    assert _call(client, "post", "/api/distributor/shutdown", staff_token).json()["status"]["state"] == "halted"
    assert _call(client, "post", "/api/distributor/resume", staff_token).json()["status"]["state"] != "halted"


@pytest.mark.parametrize("body, field", [({"max_machines": 0}, "max_machines"), ({"max_machines": "4"}, "max_machines"),
                                         ({"max_machines": 43}, "max_machines"), ({}, "max_machines"),
                                         ({"max_machines": 2, "min": 1}, "min")])
def test_a_bad_machine_count_gets_400(client, staff_token, body, field):
    response = _call(client, "post", "/api/distributor", staff_token, body=body)
    assert response.status_code == 400 and field in response.json()["errors"]
    assert DistributorConfig.get().max_machines == 1


def test_a_wrong_method_gets_405(client, token):
    response = _call(client, "delete", "/api/jobs", token)
    assert response.status_code == 405 and response["Allow"] == "GET, POST, HEAD"


def _api_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every view the URLconf serves under /api/."""
    from django.urls import URLResolver, get_resolver

    routes = set()

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif route.startswith("api/"):
                path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.removeprefix("api/"))
                methods = getattr(entry.callback, "api_methods", None)
                assert methods, f"/{route}: an API view is declared with @api(methods)"
                routes.update((method.lower(), path) for method in methods)

    walk(get_resolver().url_patterns, "")
    return routes


def test_the_schema_describes_every_endpoint(client, token):
    schema = _call(client, "get", "/api/openapi.json", token).json()
    assert schema["openapi"].startswith("3.")
    described = {(method, path) for path, item in schema["paths"].items() for method in item
                 if method in {"get", "put", "post", "delete", "patch", "head", "options"}}
    routed = _api_routes()
    assert len(routed) > 10
    assert sorted(routed - described) == [], "routes the schema lacks"
    assert sorted(described - routed) == [], "paths in the schema that no route serves"
    assert schema["servers"][0]["url"] == "http://testserver/api"


def test_reading_a_job_costs_a_bounded_number_of_queries(client, token, alice, django_assert_max_num_queries):
    job = build(200, 4, owner=alice)["job"]
    with django_assert_max_num_queries(8):
        assert _call(client, "get", f"/api/jobs/{job.pk}", token).status_code == 200


def test_an_oversized_submission_gets_413_before_it_is_read(client, token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    response = _call(client, "post", "/api/check", token, body={"file": "x" * 10_000})
    assert response.status_code == 413 and "body" in response.json()["errors"]
