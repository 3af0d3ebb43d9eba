"""Walks every URL of the site: logged-out visitors are refused everywhere but
the login page, and users who are not staff are refused every staff view."""
from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# Sample values for URL parameters: enough to reach the view's access check.
SAMPLES = {"action": "kill", "format": "tasksets-csv", "kind": "log", "name": "schedulability"}
PUBLIC = {"login"}
STAFF_ONLY = {"set-max-machines", "control", "target-new", "target-edit", "binary-upload", "image-upload",
              "api-distributor", "api-control", "api-machine-order", "audit", "api-audit", "target-calibrate",
              "api-etm-fit", "api-etm-calibrate", "slot-health", "api-slot"}
EVERYONE = {"logout", "profile", "token-create", "token-revoke", "dashboard", "dashboard-fragment", "submit", "jobs",
            "job", "job-fragment", "job-cancel", "job-resubmit", "job-export", "taskset", "taskset-gantt", "machines",
            "machine", "machine-console", "machine-download", "targets", "binaries", "api-schema", "api-status",
            "api-check", "api-jobs", "api-job", "api-job-cancel", "api-job-resubmit", "api-job-priority",
            "api-job-tasksets", "api-job-export", "api-taskset", "campaigns", "campaign-new", "campaign",
            "campaign-stop", "campaign-continue", "campaign-plot", "api-campaigns", "api-campaign",
            "api-campaign-stop", "api-campaign-continue", "api-targets", "api-target", "api-binaries", "api-images",
            "api-machines", "api-machine", "etms", "etm", "etm-plot", "job-relabel", "api-etms", "api-etm",
            "api-etm-export", "api-job-relabel", "api-slots",
            "job-plot", "campaign-tasksets", "api-job-results", "api-campaign-results", "content"}


def _walk(patterns, prefix: str = "", namespace: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            yield f"{namespace}{entry.name or ''}", prefix + str(entry.pattern)


def _url(pattern: str) -> str:
    """A concrete URL for a route or regex, with sample or numeric parameters."""
    url = re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: SAMPLES.get(m.group(2), "1"), pattern)
    url = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLES.get(m.group(1), "1"), url)
    url = url.replace("^", "").replace("$", "").replace("\\", "")
    return "/" + url


ROUTES = sorted(set(_walk(get_resolver().url_patterns)))
SITE = [(name, _url(pattern)) for name, pattern in ROUTES if not name.startswith("admin:")]
ADMIN = [(name, _url(pattern)) for name, pattern in ROUTES if name.startswith("admin:") and name != "admin:login"]


def test_every_url_is_classified():
    names = {name for name, _ in SITE}
    assert names == PUBLIC | STAFF_ONLY | EVERYONE, "a new view must be added to PUBLIC, STAFF_ONLY or EVERYONE"
    assert len(ADMIN) > 20


def _refused_anonymous(response) -> bool:
    if response.status_code == 302:
        # the admin's logout sends a visitor back to the admin, which asks to log in
        return "/login/" in response["Location"] or response["Location"] == "/admin/"
    return response.status_code in (401, 403, 405)


def test_logged_out_visitors_are_refused_everywhere_but_the_login_page(client, db):
    for name, url in [item for item in SITE if item[0] not in PUBLIC] + ADMIN:
        for method in (client.get, client.post):
            response = method(url)
            assert _refused_anonymous(response), f"{method.__name__.upper()} {url} ({name}) gave {response.status_code}"


def test_a_polled_fragment_sends_logged_out_browsers_to_the_login_page(client, db):
    response = client.get("/dashboard/live", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response["HX-Redirect"] == "/login/"


def test_the_login_page_is_open(client, db):
    assert client.get("/login/").status_code == 200


def test_users_who_are_not_staff_get_403_on_staff_views(client, alice):
    client.force_login(alice)
    for name, url in [item for item in SITE if item[0] in STAFF_ONLY]:
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 403, f"{method.__name__.upper()} {url} ({name}) gave {response.status_code}"


def test_api_tokens_of_users_who_are_not_staff_get_403_on_staff_endpoints(client, alice):
    from webapp.models import ApiToken

    _, token = ApiToken.issue(alice, "script")
    endpoints = [item for item in SITE if item[0] in STAFF_ONLY and item[0].startswith("api-")]
    assert len(endpoints) == 7
    for name, url in endpoints:
        call = client.get if name == "api-audit" else client.post  # the trail is read, the controls posted
        response = call(url, data={} if name == "api-audit" else "{}", content_type="application/json",
                        headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, f"{url} ({name}) gave {response.status_code}"
        assert "authorization" in response.json()["errors"]


def test_users_who_are_not_staff_cannot_use_the_admin(client, alice):
    client.force_login(alice)
    for name, url in ADMIN:
        response = client.get(url)
        assert response.status_code in (302, 403, 404, 405), f"{url} ({name}) gave {response.status_code}"
        if response.status_code == 302:
            assert response["Location"].startswith(("/admin/login/", "/admin/")), f"{url} ({name})"
        if name != "admin:logout":
            assert client.session.get("_auth_user_id"), "only the admin's logout may log a user out"


@pytest.mark.django_db
def test_staff_reach_the_staff_pages(client, staff):
    client.force_login(staff)
    assert client.get("/targets/new").status_code == 200
    assert client.post("/distributor/max", {"max_machines": "2"}).status_code == 302


@pytest.mark.django_db
def test_users_who_are_not_staff_see_no_machine_controls(client, alice):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert 'name="max_machines"' not in page
    assert "Kill all" not in page
    assert "Only staff can change the machine count" in page
