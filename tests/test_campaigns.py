"""Campaigns: random task-sets reproducible from a seed, growing campaigns that
survive a crash, and analytic verdicts checked against SimSo."""
from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from django.core.management import CommandError, call_command

from distributor import queue, taskfile
from distributor.analysis import analyse
from distributor.campaigns import generate, services
from distributor.campaigns.models import Campaign, CampaignLevel, CampaignSet
from distributor.models import Job, Machine, Target, TaskSet
from sessions import etm

pytestmark = pytest.mark.django_db

GROW_FIELDS = {
    "pkg": {"list": ["pi", "idle"]},
    "arg1": {"range": [1, 40, 1]},
    "period": {"range": [20, 120, 10]},
    "priority": {"range": [1, 20, 1]},
    "numberofjobs": {"range": [1, 3, 1]},
}


@pytest.fixture(autouse=True)
def fresh_expanders():
    """The engine caches a job's expander by job id, and ids come back after
    a test's rollback: start every test without a stale one."""
    queue._expander_of.cache_clear()


def random_params(**changes) -> generate.RandomParams:
    values = dict(tasks=4, utilisation=(0.5, 0.95), periods={"range": [10, 500, 1]}, distribution="loguniform",
                  packages={"pi": 1.0, "idle": 2.0}, count=20, jobs=3, priorities="rm")
    return generate.RandomParams(**{**values, **changes})


def dry_target(name: str) -> Target:
    return Target.objects.create(name=name, kind="stdio", settings={"print": False})


def drive(job: Job, limit: int | None = None) -> int:
    """Run up to ``limit`` of the job's task-sets the way a machine does —
    claim, then finish — with the analytic verdict as the measured outcome,
    so that outcomes depend on the task-set alone."""
    machine = Machine.objects.filter(target=job.target, state__in=Machine.LIVE_STATES).first()
    if machine is None:
        machine = Machine.objects.create(target=job.target, slot=0, host="test", state=Machine.State.IDLE,
                                         lease=uuid.uuid4())
    model, done = etm.load(), 0
    while limit is None or done < limit:
        claim = queue.claim_next(machine)
        if claim is None:
            break
        result = analyse(claim.tasks, model)
        outcome = TaskSet.Outcome.SCHEDULABLE if result["verdict"] else TaskSet.Outcome.UNSCHEDULABLE
        assert claim.taskset.finish(machine, outcome, [], analysis=result)
        done += 1
    return done


def current_job(campaign: Campaign) -> Job:
    campaign.refresh_from_db()
    return CampaignLevel.objects.get(campaign=campaign, number=campaign.level).job


def run_to_the_end(campaign: Campaign) -> None:
    for _ in range(20):
        services.advance(campaign)
        campaign.refresh_from_db()
        if campaign.state != Campaign.State.RUNNING:
            return
        drive(current_job(campaign))
    raise AssertionError("the campaign did not end")


def sets_by_level(campaign: Campaign) -> dict[int, list[str]]:
    levels: dict[int, list[str]] = {}
    for level, digest in CampaignSet.objects.filter(campaign=campaign).values_list("level", "digest"):
        levels.setdefault(level, []).append(digest)
    return {level: sorted(digests) for level, digests in levels.items()}


# -- random campaigns ---------------------------------------------------------------


def test_a_random_campaign_is_reproducible_from_its_seed():
    target = dry_target("dry")
    first = services.create_random("a", target, random_params(), seed=7)
    again = services.create_random("b", target, random_params(), seed=7)
    other = services.create_random("c", target, random_params(), seed=8)
    spec = [c.levels.get().job.spec["tasksets"] for c in (first, again, other)]
    assert spec[0] == spec[1] != spec[2]
    assert first.levels.get().job.variant_count == 20
    assert first.params["etm"] == {"name": etm.load().name, "version": etm.load().version}


def test_random_sets_follow_uunifast_rate_monotonic_and_the_etm():
    campaign = services.create_random("a", dry_target("dry"), random_params(count=30), seed=3)
    expander = taskfile.expander(campaign.levels.get().job.spec)
    model = etm.load()
    for index in range(expander.count):
        tasks = expander.variant(index)
        assert len(tasks) == 4 and {t["offset"] for t in tasks} == {0} and {t["deadline"] for t in tasks} == {0}
        by_priority = sorted(tasks, key=lambda t: t["priority"])
        assert [t["period"] for t in by_priority] == sorted(t["period"] for t in tasks)
        utilisation = analyse(tasks, model)["utilisation"]
        # C is rounded up to whole ms (and idle/pi have a granularity), so U drifts a little upwards
        assert 0.45 <= utilisation <= 1.3, utilisation


def test_uunifast_shares_sum_to_the_total():
    import random

    shares = generate.uunifast(random.Random(1), 6, 0.8)
    assert len(shares) == 6 and abs(sum(shares) - 0.8) < 1e-12 and min(shares) >= 0


def test_pick_arg1_inverts_the_execution_time_model():
    model = etm.load()
    assert model.execution_time_ms("pi", generate.pick_arg1(model, "pi", 52)) == 52
    assert model.execution_time_ms("idle", generate.pick_arg1(model, "idle", 7)) == 7
    assert generate.pick_arg1(model, "hey", 50) == 0  # its time does not depend on arg1


def test_the_random_command_prints_the_campaign_and_its_job():
    dry_target("dry")
    out = io.StringIO()
    call_command("campaign", "random", "--tasks", "3", "--utilisation", "0.7", "--periods", "10:100",
                 "--pkg", "pi:1,idle:1", "--count", "5", "--seed", "1", "--target", "dry", stdout=out)
    printed = json.loads(out.getvalue())
    assert Job.objects.get(pk=printed["job"]).variant_count == 5
    assert Campaign.objects.get(pk=printed["campaign"]).kind == Campaign.Kind.RANDOM


@pytest.mark.parametrize("arguments, option", [
    (["--utilisation", "lots"], "--utilisation"),
    (["--periods", "100:10"], "--periods"),
    (["--pkg", "pi:-1"], "--pkg"),
    (["--target", "nowhere"], "--target"),
])
def test_the_random_command_names_a_bad_option(arguments, option):
    base = {"--tasks": "3", "--utilisation": "0.7", "--periods": "10:100", "--pkg": "pi", "--count": "5",
            "--seed": "1"}
    base.update(dict(zip(arguments[::2], arguments[1::2])))
    with pytest.raises(CommandError, match=f"^{option}"):
        call_command("campaign", "random", *[part for pair in base.items() for part in pair])


def test_a_random_campaign_finishes_with_its_job():
    campaign = services.create_random("a", dry_target("dry"), random_params(count=3), seed=1)
    assert services.advance(campaign) is False
    drive(campaign.levels.get().job)
    assert services.advance(campaign) is True
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.FINISHED


# -- growing campaigns --------------------------------------------------------------


def grow(target: Target, seed: int = 11) -> Campaign:
    return services.create_growing("g", target, GROW_FIELDS, singles=8, max_size=3, seed=seed, max_per_level=15)


def test_a_growing_campaign_grows_from_successful_sets_only():
    campaign = grow(dry_target("dry"))
    assert campaign.level == 1 and current_job(campaign).variant_count == 8
    run_to_the_end(campaign)
    assert campaign.state == Campaign.State.FINISHED and campaign.level == 3
    levels = {level.number: level for level in campaign.levels.all()}
    good = {n: set(TaskSet.objects.filter(job=levels[n].job, outcome="schedulable").values_list("variant", flat=True))
            for n in levels}
    singles = {s.variant for s in CampaignSet.objects.filter(campaign=campaign, level=1) if s.variant in good[1]}
    previous = [s.members for s in CampaignSet.objects.filter(campaign=campaign, level=2) if s.variant in good[2]]
    for grown in CampaignSet.objects.filter(campaign=campaign, level=3):
        assert len(grown.members) == 3 and set(grown.members) <= singles
        assert any(set(p) < set(grown.members) for p in previous)
    digests = list(CampaignSet.objects.filter(campaign=campaign).values_list("digest", flat=True))
    assert len(digests) == len(set(digests))  # never the same task-set twice
    assert levels[3].sets <= 15


def test_a_growing_campaign_killed_mid_level_ends_like_an_uninterrupted_one():
    uninterrupted = grow(dry_target("one"))
    run_to_the_end(uninterrupted)

    killed = grow(dry_target("two"))
    drive(current_job(killed))
    assert services.advance(killed) is True  # level 2 submitted
    drive(current_job(killed), limit=current_job(killed).variant_count // 2)
    # the "crash": nothing survives but the database
    queue._expander_of.cache_clear()
    taskfile._expander_for.cache_clear()
    resumed = Campaign.objects.get(pk=killed.pk)
    assert services.advance(resumed) is False  # level 2 still running: nothing to do
    run_to_the_end(resumed)

    assert resumed.state == Campaign.State.FINISHED
    assert sets_by_level(resumed) == sets_by_level(uninterrupted)
    assert len(sets_by_level(resumed)) == 3


def test_a_crash_while_submitting_a_level_leaves_nothing_behind(monkeypatch):
    campaign = grow(dry_target("dry"))
    drive(current_job(campaign))
    jobs_before = Job.objects.count()

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing the level")

    with monkeypatch.context() as patch:
        patch.setattr(CampaignSet.objects, "bulk_create", crash)
        with pytest.raises(RuntimeError):
            services.advance(campaign)
    campaign.refresh_from_db()
    assert campaign.level == 1 and Job.objects.count() == jobs_before
    assert not CampaignSet.objects.filter(campaign=campaign, level=2).exists()
    assert services.advance(campaign) is True and Campaign.objects.get(pk=campaign.pk).level == 2


def test_advancing_twice_or_from_a_stale_copy_submits_a_level_once():
    campaign = grow(dry_target("dry"))
    stale = Campaign.objects.get(pk=campaign.pk)
    drive(current_job(campaign))
    assert services.advance(campaign) is True
    assert services.advance(stale) is False and services.advance(campaign) is False
    assert CampaignLevel.objects.filter(campaign=campaign).count() == 2
    # a caller that computed level 2 from an old view loses the compare-and-set
    assert services._submit_level(stale, 2, [([0, 1], [{"pkg": "pi"}, {"pkg": "idle"}])]) is False


def test_a_cancelled_level_stops_the_campaign():
    campaign = grow(dry_target("dry"))
    current_job(campaign).cancel()
    assert services.advance_all() == 1
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.STOPPED and "cancelled" in campaign.last_error


def test_advance_all_keeps_an_error_on_the_row_and_goes_on(monkeypatch):
    broken, fine = grow(dry_target("one")), grow(dry_target("two"))
    drive(current_job(broken))
    drive(current_job(fine))
    real = services._next_sets

    def fail_for_broken(campaign):
        if campaign.pk == broken.pk:
            raise ValueError("boom")
        return real(campaign)

    monkeypatch.setattr(services, "_next_sets", fail_for_broken)
    assert services.advance_all() == 1
    broken.refresh_from_db()
    assert broken.state == Campaign.State.RUNNING and broken.last_error == "ValueError: boom"


def test_the_grow_status_and_list_commands_show_progress():
    dry_target("dry")
    out = io.StringIO()
    call_command("campaign", "grow", "--singles", "4", "--max-size", "2", "--pkg", "pi,idle", "--arg1", "1:30",
                 "--period", "50:100:10", "--seed", "5", "--target", "dry", stdout=out)
    campaign = Campaign.objects.get(pk=json.loads(out.getvalue())["campaign"])
    drive(current_job(campaign), limit=2)
    status = io.StringIO()
    call_command("campaign", "status", str(campaign.pk), "--json", stdout=status)
    report = json.loads(status.getvalue())
    assert report["levels"][0]["finished"] == 2 and report["levels"][0]["sets"] == 4
    level = report["levels"][0]
    schedulable = TaskSet.objects.filter(job_id=level["job"], state="finished", outcome="schedulable").count()
    assert level["schedulable"] == level["successful"] == schedulable, "successful: the old name, kept"
    text = io.StringIO()
    call_command("campaign", "status", str(campaign.pk), stdout=text)
    assert f"{schedulable} schedulable" in text.getvalue()
    listing = io.StringIO()
    call_command("campaign", "list", stdout=listing)
    assert f"{campaign.pk}\tgrow\trunning" in listing.getvalue()
    with pytest.raises(CommandError, match="^--arg1"):
        call_command("campaign", "grow", "--singles", "4", "--pkg", "pi", "--arg1", "x:y", "--seed", "1")


@pytest.mark.parametrize("arguments", [["--priority", "9999"], ["--period", "1:99999999999999"]])
def test_a_grow_campaign_whose_first_level_is_refused_leaves_no_campaign(arguments):
    # The campaign row was stored before its level's file was checked: each
    # refusal left a campaign "running" at level 0 that the reconciler retried.
    dry_target("dry")
    with pytest.raises(CommandError, match="the generated task-set file was refused"):
        call_command("campaign", "grow", "--singles", "3", "--pkg", "pi", "--seed", "1", "--target", "dry",
                     *arguments, stdout=io.StringIO())
    assert not Campaign.objects.exists() and not Job.objects.exists()


# -- the analysis against SimSo -----------------------------------------------------


def simso_schedulable(session, tasks: list[dict]) -> bool:
    from sessions.events import EventTracker

    session.start(tasks)
    tracker = EventTracker(tasks)
    tracker.feed(session.run(1.0))
    assert tracker.finished
    return tracker.result().outcome == "schedulable"


@pytest.mark.slow
@pytest.mark.parametrize("priorities, count, utilisation", [("rm", 500, (0.6, 1.05)), ("edf", 200, (0.8, 1.3))])
def test_analytic_verdicts_agree_with_simso_on_a_random_campaign(priorities, count, utilisation):
    """Synchronous, implicit-deadline sets (offset 0, deadline 0 = period):
    there RTA (distinct rate-monotonic priorities) and the EDF demand test are
    exact, the bound tests sufficient, and SimSo schedules the way the
    analysis' model does (kill at the period end, finite job counts), so every
    exact verdict must equal SimSo's outcome and no passing bound test may
    meet an unschedulable set."""
    from sessions.base import SessionInfo
    from sessions.simso import SimsoSession

    params = random_params(tasks=3, utilisation=utilisation, periods={"range": [10, 200, 1]}, count=count,
                           jobs=4, priorities=priorities)
    campaign = services.create_random("simso", Target.default(), params, seed=2024)
    expander = taskfile.expander(campaign.levels.get().job.spec)
    session = SimsoSession(SessionInfo(machine_id=0, slot=0, address="", settings={}, log=logging.getLogger("t")))
    model = session.model
    exact = "rta" if priorities == "rm" else "edf"
    outcomes = []
    for index in range(expander.count):
        tasks = expander.variant(index)
        measured = simso_schedulable(session, tasks)
        result = analyse(tasks, model)
        assert result[exact]["exact"] is True
        assert result[exact]["verdict"] == measured, (index, tasks, result)
        assert result["simulation"]["verdict"] == measured, (index, tasks)
        for bound in ("liu_layland", "hyperbolic"):
            assert not (result[bound]["verdict"] and not measured), (bound, index)
        outcomes.append(measured)
    assert 0.1 < sum(outcomes) / len(outcomes) < 0.9  # both outcomes well represented
