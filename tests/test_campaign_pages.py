"""Campaigns on the web and in the API (issue 17, point 6): the list, a page
per campaign with its levels, jobs and plots, starting a random or a growing
one from a form or a POST, and stop / continue — a campaign stopped mid-level
and continued from the web ends with the same task-sets as one never stopped."""
from __future__ import annotations

import json

import pytest

from distributor.campaigns import services
from distributor.campaigns.models import Campaign
from distributor.models import Job, TaskSet
from tests.test_campaigns import current_job, drive, dry_target, fresh_expanders, grow, run_to_the_end, sets_by_level  # noqa: F401
from webapp.models import ApiToken

RANDOM = {"tasks": "3", "utilisation": "0.5:0.8", "periods": "10:200", "distribution": "loguniform",
          "pkg": "pi:1,idle:1", "count": "6", "jobs": "2", "priorities": "rm", "seed": "7"}
GROWING = {"singles": "5", "max_size": "3", "max_per_level": "10", "pkg": "pi,idle", "arg1": "1:40",
           "period": "20:120:10", "priority": "1:20", "numberofjobs": "1:3", "seed": "11"}


def form(kind: str, values: dict, target: str) -> dict:
    return {"kind": kind, **{f"{kind}-{key}": value for key, value in {**values, "target": target}.items()}}


def outcomes(campaign: Campaign) -> dict[int, list[tuple]]:
    return {level.number: sorted(TaskSet.objects.filter(job_id=level.job_id).values_list("variant", "state", "outcome"))
            for level in campaign.levels.all()}


def test_start_a_random_and_a_growing_campaign_from_the_form(client, alice, db):
    dry_target("dry")
    client.force_login(alice)
    page = client.get("/campaigns/new").content.decode()
    assert 'id="new-random"' in page and 'id="new-grow"' in page
    response = client.post("/campaigns/new", form("random", RANDOM, "dry"))
    assert response.status_code == 302
    random_one = Campaign.objects.get(kind="random")
    assert response["Location"] == f"/campaigns/{random_one.pk}/"
    assert (random_one.owner, random_one.seed, current_job(random_one).variant_count) == (alice, 7, 6)
    response = client.post("/campaigns/new", form("grow", GROWING, "dry"))
    growing = Campaign.objects.get(kind="grow")
    assert response.status_code == 302 and growing.level == 1 and current_job(growing).variant_count == 5
    listing = client.get("/campaigns/").content.decode()
    assert f"/campaigns/{random_one.pk}/" in listing and f"/campaigns/{growing.pk}/" in listing


@pytest.mark.parametrize("kind, change, field", [
    ("random", {"periods": "ten"}, "periods"), ("random", {"utilisation": "2:1"}, "utilisation"),
    ("random", {"tasks": "0"}, "tasks"), ("grow", {"pkg": ""}, "pkg"), ("grow", {"arg1": "5:1"}, "arg1"),
])
def test_a_bad_option_is_shown_at_its_field_and_nothing_starts(client, alice, db, kind, change, field):
    dry_target("dry")
    client.force_login(alice)
    values = {**(RANDOM if kind == "random" else GROWING), **change}
    response = client.post("/campaigns/new", form(kind, values, "dry"))
    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()
    assert not Campaign.objects.exists() and not Job.objects.exists()


def test_the_campaign_page_shows_levels_jobs_and_plots(client, alice, db):
    campaign = grow(dry_target("dry"))
    drive(current_job(campaign))
    services.advance(campaign)
    client.force_login(alice)
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    for level in campaign.levels.all():
        assert f'href="/jobs/{level.job_id}/"' in page
    for name in ("schedulability", "response-times", "exit-types"):
        assert f"/campaigns/{campaign.pk}/{name}.svg" in page
        svg = client.get(f"/campaigns/{campaign.pk}/{name}.svg")
        assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
    assert client.get(f"/campaigns/{campaign.pk}/nothing.svg").status_code == 404


def test_a_campaign_stopped_mid_level_and_continued_from_the_web_ends_as_one_never_stopped(client, staff, db):
    uninterrupted = grow(dry_target("one"))
    run_to_the_end(uninterrupted)

    stopped = grow(dry_target("two"))
    drive(current_job(stopped))
    assert services.advance(stopped) is True  # level 2 submitted
    level_two = current_job(stopped)
    drive(level_two, limit=level_two.variant_count // 2)
    client.force_login(staff)
    assert client.post(f"/campaigns/{stopped.pk}/stop").status_code == 302
    stopped.refresh_from_db()
    level_two.refresh_from_db()
    assert (stopped.state, level_two.state) == (Campaign.State.STOPPED, Job.State.CANCELLED)
    assert services.advance(stopped) is False  # a stopped campaign stays put
    assert "Continue" in client.get(f"/campaigns/{stopped.pk}/").content.decode()

    assert client.post(f"/campaigns/{stopped.pk}/continue").status_code == 302
    stopped.refresh_from_db()
    level_two.refresh_from_db()
    assert (stopped.state, level_two.state) == (Campaign.State.RUNNING, Job.State.RUNNING)
    run_to_the_end(stopped)
    stopped.refresh_from_db()
    assert stopped.state == Campaign.State.FINISHED
    assert sets_by_level(stopped) == sets_by_level(uninterrupted) and len(sets_by_level(stopped)) == 3
    assert outcomes(stopped) == outcomes(uninterrupted)


def test_only_the_owner_or_staff_stop_or_continue(client, alice, django_user_model, db):
    campaign = services.create_growing("g", dry_target("dry"), {"pkg": {"list": ["pi"]}}, singles=2, max_size=2,
                                       seed=1, owner=alice)
    bob = django_user_model.objects.create_user("bob")
    client.force_login(bob)
    assert client.post(f"/campaigns/{campaign.pk}/stop").status_code == 403
    client.force_login(alice)
    assert client.post(f"/campaigns/{campaign.pk}/stop").status_code == 302
    assert Campaign.objects.get(pk=campaign.pk).state == Campaign.State.STOPPED


# -- the API ---------------------------------------------------------------------


def call(client, method: str, url: str, token: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_the_api_starts_lists_shows_stops_and_continues_a_campaign(client, alice, db):
    dry_target("dry")
    token = ApiToken.issue(alice, "script")[1]
    body = {"kind": "grow", **{key: value for key, value in GROWING.items()}, "seed": 11, "max_size": 3,
            "target": "dry"}
    response = call(client, "post", "/api/campaigns", token, body)
    assert response.status_code == 201, response.content
    started = response.json()
    assert (started["kind"], started["state"], started["level"], started["owner"]) == ("grow", "running", 1, "alice")
    assert started["levels"][0]["job_url"].endswith(f"/api/jobs/{started['levels'][0]['job']}")
    listed = call(client, "get", "/api/campaigns", token).json()
    assert [row["id"] for row in listed["results"]] == [started["id"]]
    stop = call(client, "post", f"/api/campaigns/{started['id']}/stop", token).json()
    assert stop["stopped"] is True and stop["campaign"]["levels"][0]["job_state"] == "cancelled"
    again = call(client, "post", f"/api/campaigns/{started['id']}/continue", token).json()
    assert again["continued"] is True and again["campaign"]["state"] == "running"
    assert again["campaign"]["levels"][0]["job_state"] in ("queued", "running")
    shown = call(client, "get", f"/api/campaigns/{started['id']}", token).json()
    assert shown["params"]["singles"] == 5


@pytest.mark.parametrize("body, field", [
    ({"kind": "random", **RANDOM, "periods": "x"}, "periods"), ({"kind": "grow", "seed": 1}, "pkg"),
    ({"kind": "square", "seed": 1}, "kind"), ({"kind": "random", **RANDOM, "colour": "red"}, "colour"),
    ({"kind": "random", **RANDOM, "seed": -1}, "seed"),
])
def test_the_api_refuses_bad_options_naming_them(client, alice, db, body, field):
    dry_target("dry")
    token = ApiToken.issue(alice, "script")[1]
    response = call(client, "post", "/api/campaigns", token, {**body, "target": "dry"})
    assert response.status_code == 400 and field in response.json()["errors"], response.content
    assert not Campaign.objects.exists()


def test_the_command_stops_mid_level_and_continues(db):
    import io

    from django.core.management import call_command

    campaign = grow(dry_target("dry"))
    out = io.StringIO()
    call_command("campaign", "stop", str(campaign.pk), "--cancel-level", stdout=out)
    assert current_job(campaign).state == Job.State.CANCELLED
    call_command("campaign", "continue", str(campaign.pk), stdout=out)
    assert out.getvalue().splitlines() == ["stopped", "continues where it stopped"]
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING and current_job(campaign).state == Job.State.QUEUED
