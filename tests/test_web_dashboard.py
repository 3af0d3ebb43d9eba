"""The dashboard and its polled fragment: what it shows, what staff can do
from it, and a query count that does not grow with the data."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bench.web_pages import build
from distributor.models import DistributorConfig, Job, Machine, TaskSet
from webapp.progress import progress_of


@pytest.fixture
def campaign(db, alice):
    return build(120, 4, owner=alice)


def test_the_fragment_shows_every_machine_and_what_it_runs(client, alice, campaign):
    client.force_login(alice)
    page = client.get("/dashboard/live").content.decode()
    job = campaign["job"]
    machines = re.search(r'<table id="machines">(.*?)</table>', page, re.S).group(1)
    for machine in campaign["machines"]:
        machine.refresh_from_db()
        assert f'href="/machines/{machine.pk}/"' in machines
        assert f'href="/tasksets/{machine.current_id}/"' in machines
    assert machines.count(f'href="/jobs/{job.pk}/"') == 4
    # time on the current task-set: 42 s when the fixture was built, a few more on a loaded machine
    assert re.search(r">4[2-9] s<", machines)
    assert 'id="distributor-state">busy<' in page
    assert ">4 / 1<" in page  # live / wanted


def test_the_queue_shows_progress_with_rate_and_eta(client, alice, campaign):
    client.force_login(alice)
    page = client.get("/dashboard/live").content.decode()
    row = re.search(rf'<tr data-job="{campaign["job"].pk}">(.*?)</tr>', page, re.S).group(1)
    progress = progress_of([campaign["job"]])[campaign["job"].pk]
    assert f'data-percent="{progress.percent}"' in row
    assert re.search(r"\d+(\.\d)?/min", row), "a rate"
    assert re.search(r"\d+ (s|min)", row), "an ETA"
    for job in campaign["queued"]:
        assert f'data-job="{job.pk}"' in page


def test_the_fragment_says_idle_and_halted(client, alice, db):
    client.force_login(alice)
    assert 'id="distributor-state">idle<' in client.get("/dashboard/live").content.decode()
    DistributorConfig.objects.update_or_create(pk=1, defaults={"halted": True})
    assert 'id="distributor-state">halted<' in client.get("/dashboard/live").content.decode()


def test_the_fragment_and_the_status_agree_on_busy_whatever_the_number_of_jobs(client, alice, stdio_target):
    """Work waiting in the eleventh active job makes the distributor busy on
    the dashboard (which lists ten jobs) as in the API and the CLI."""
    from distributor.queue import submit_job
    from distributor.status import overview
    from tests.test_queue import variants_file

    Job.objects.bulk_create([Job(name=f"nothing left {n}", target=stdio_target, spec={}, variant_count=0, cursor=0,
                                 priority=10, state=Job.State.RUNNING) for n in range(10)])
    submit_job(variants_file(3), target=stdio_target, name="waiting")
    client.force_login(alice)
    assert overview()["state"] == "busy"
    assert 'id="distributor-state">busy<' in client.get("/dashboard/live").content.decode()


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_fragment_costs_the_same_queries_whatever_the_data(client, staff, django_assert_max_num_queries):
    client.force_login(staff)
    build(30, 2, owner=staff)
    small = _queries(client, "/dashboard/live")
    build(300, 16, owner=staff)
    Job.objects.create(name="more", target=Job.objects.first().target, spec={}, variant_count=5, cursor=0)
    assert _queries(client, "/dashboard/live") <= small + 4  # one rate query per extra job shown
    with django_assert_max_num_queries(20):
        client.get("/dashboard/live")


def test_progress_of_many_jobs_agrees_with_job_progress(campaign, alice):
    cancelled = campaign["queued"][0]
    TaskSet.objects.create(job=cancelled, variant=0, state=TaskSet.State.CANCELLED)
    Job.objects.filter(pk=cancelled.pk).update(state=Job.State.CANCELLED, cursor=1)
    jobs = list(Job.objects.all())
    many = progress_of(jobs)
    for one in jobs:
        expected = one.progress()
        assert {k: getattr(many[one.pk], k) for k in expected} == expected, one


def test_staff_change_the_machine_count(client, staff, db):
    client.force_login(staff)
    response = client.post("/distributor/max", {"max_machines": "5"})
    assert response.status_code == 302
    assert DistributorConfig.get().max_machines == 5


@pytest.mark.parametrize("value, message", [("0", "between 1 and 42"), ("43", "between 1 and 42"),
                                            ("many", "not a whole number")])
def test_a_bad_machine_count_is_refused_next_to_the_field(client, staff, db, value, message):
    client.force_login(staff)
    response = client.post("/distributor/max", {"max_machines": value})
    assert response.status_code == 400
    page = response.content.decode()
    assert message in re.search(r'<ul class="errorlist">(.*?)</ul>', page, re.S).group(1)
    assert f'value="{value}"' in page
    assert DistributorConfig.get().max_machines == 1


def test_kill_all_halts_and_stops_the_machines(client, staff, campaign):
    client.force_login(staff)
    response = client.post("/distributor/kill")
    assert response.status_code == 302
    assert DistributorConfig.get().halted
    assert set(Machine.objects.values_list("stop_mode", flat=True)) == {Machine.StopMode.KILL}
    client.post("/distributor/resume")
    assert not DistributorConfig.get().halted


def test_the_buttons_ask_before_they_act(client, staff, db):
    client.force_login(staff)
    page = client.get("/").content.decode()
    for action in ("kill", "shutdown", "resume", "reboot"):
        form = re.search(rf'<form method="post" action="/distributor/{action}"[^>]*>', page).group(0)
        assert "data-confirm=" in form
    assert 'name="csrfmiddlewaretoken"' in page


def test_the_page_polls_its_fragment(client, alice, db):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert 'hx-get="/dashboard/live"' in page and 'hx-trigger="every 2s' in page
