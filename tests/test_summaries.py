"""A job's results computed once per state of its task-sets and served from
the database (distributor/summaries.py): a finished job's pages reuse them
without counting its task-sets again; a set ending, a requeue or a relabel
makes the next view show new figures; a running job's recent figures are
shown "as of" their time; a summary is never stored as current for a state
its figures are not of."""
from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from distributor import reconciler, summaries
from distributor.analysis import analyse
from distributor.campaigns.models import Campaign, CampaignLevel
from distributor.labels import relabel
from distributor.models import Job, ResultsSummary, TaskSet
from distributor.models.tasksets import store_analyses
from sessions import etm
from tests.test_results import SETS
from webapp.models import ApiToken

TASKSETS = TaskSet._meta.db_table


@pytest.fixture
def job(stdio_target, alice):
    """The hand-built job of test_results, finished, with its tallies as the engine keeps them."""
    job = Job.objects.create(name="hand-built", owner=alice, target=stdio_target, spec={}, variant_count=len(SETS),
                             cursor=len(SETS), state=Job.State.RUNNING)
    TaskSet.objects.bulk_create([
        TaskSet(job=job, variant=variant, state="finished" if state == "running" else state,
                outcome=outcome or ("schedulable" if state == "running" else ""), analysis=analysis)
        for variant, (outcome, analysis, state) in enumerate(SETS)])
    job.add_counts(finished=TaskSet.objects.filter(job=job, state="finished").count(),
                   bad=TaskSet.objects.filter(job=job, state="bad").count())
    assert job.end_if_done()
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def headers(alice):
    return {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}


def _counting_queries(queries) -> list[str]:
    """The statements that count the task-sets (the page's own list of
    task-sets, one page of rows, and its progress bar's indexed count of the
    running ones are no part of the results)."""
    return [q["sql"] for q in queries if TASKSETS in q["sql"] and "COUNT(" in q["sql"].upper()
            and "'running'" not in q["sql"]]


def _end_one_more(job: Job, outcome: str = "schedulable") -> TaskSet:
    """A new variant ends finished, its tally added in the same transaction (as the engine does)."""
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(variant_count=job.variant_count + 1, cursor=job.cursor + 1)
        taskset = TaskSet.objects.create(job=job, variant=job.variant_count, state="finished", outcome=outcome)
        job.add_counts(finished=1)
    return taskset


def test_a_finished_jobs_results_are_computed_once_and_reused(client, alice, job, headers,
                                                              django_assert_max_num_queries):
    first = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert first["finished"] == 11 and first["current"] is True
    assert set(ResultsSummary.objects.filter(scope=f"job-{job.pk}").values_list("part", flat=True)) == {"results"}
    with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(5):
        again = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert _counting_queries(queries.captured_queries) == []
    assert again == first
    client.force_login(alice)
    client.get(f"/jobs/{job.pk}/")  # the page stores the labels panel's counts too
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert _counting_queries(queries.captured_queries) == [] and "11</strong> finished" in page
    assert 'id="results-as-of"' not in page  # an ended job's figures are of its state now
    for name in ("schedulability", "response-times", "exit-types"):
        svg = client.get(f"/jobs/{job.pk}/{name}.svg").content
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/jobs/{job.pk}/{name}.svg").content == svg
        assert not [q for q in queries.captured_queries if TASKSETS in q["sql"]], name


def test_a_requeued_set_that_ends_shows_in_the_next_view(client, job, headers):
    assert client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()["finished"] == 11
    bad = TaskSet.objects.get(job=job, state="bad")
    assert bad.requeue_bad()
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING
    with transaction.atomic():
        TaskSet.objects.filter(pk=bad.pk).update(state="finished", outcome="unschedulable", ended_at=timezone.now())
        job.add_counts(finished=1)
    assert Job.objects.get(pk=job.pk).end_if_done()
    document = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert document["finished"] == 12 and document["current"] is True
    assert document["agreement"]["unschedulable"]["verdict"]["yes"] == 2  # its labels said yes


def test_a_relabel_shows_in_the_next_view_even_of_a_running_job(client, job, headers):
    before = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert before["labelled"] == 8
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, ended_at=None)  # within the 30 s of a running job
    relabel([job.pk])  # no tasks stored: every set gets the labels of an empty task-set
    after = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert after["current"] is True
    assert after["agreement"] != before["agreement"]
    assert after == {**client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()}


def test_labels_stored_by_any_caller_show_in_the_next_view_of_an_ended_job(client, job, headers):
    """Storing labels marks the jobs' summaries stale itself: a caller other
    than relabel cannot forget to, and leave the old labels' figures served."""
    before = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    empty = json.dumps(analyse([], etm.load()))
    store_analyses([(pk, empty) for pk in job.tasksets.values_list("pk", flat=True)], {job.pk})
    after = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert after["current"] is True
    assert after["agreement"] != before["agreement"]


def test_a_running_job_shows_recent_figures_as_of_their_time(client, alice, job, headers):
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, ended_at=None)
    client.force_login(alice)
    client.get(f"/jobs/{job.pk}/")
    _end_one_more(job)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    stored = ResultsSummary.objects.get(scope=f"job-{job.pk}", part="results")
    assert f"As of {stored.computed_at:%H:%M:%S}, 11 of 13 sets" in page  # 13 started, the new one not counted yet
    document = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert document["finished"] == 11 and document["current"] is False
    assert document["as_of"] == stored.computed_at.isoformat()
    ResultsSummary.objects.filter(pk=stored.pk).update(computed_at=timezone.now() - timedelta(seconds=31))
    document = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert document["finished"] == 12 and document["current"] is True


def test_figures_whose_state_moved_while_computed_are_never_taken_as_current(job):
    """A set ends while the figures are counted: they are stored unsettled,
    so the next look counts again instead of serving them for the new state."""
    scope = summaries.Scope(job=job)
    original = summaries.results.summarise

    def summarise_then_a_set_ends(rows):
        figures = original(rows)
        _end_one_more(job)
        return figures

    with mock.patch.object(summaries.results, "summarise", summarise_then_a_set_ends):
        figures, served = summaries.summary(scope)
    assert figures.finished == 11 and served.current is False
    assert ResultsSummary.objects.get(scope=scope.name, part="results").settled is False
    figures, served = summaries.summary(summaries.Scope(job=Job.objects.get(pk=job.pk)))
    assert figures.finished == 12 and served.current is True


def test_the_reconciler_computes_a_job_that_just_ended(client, job, headers):
    with mock.patch("distributor.background.async_task") as queued:
        reconciler.tick()
        reconciler.tick()  # queued once per state, not once per tick
    calls = [call.args for call in queued.call_args_list]
    # on the default cluster by name, even when a machine worker's tick queues them
    assert {call.kwargs["cluster"] for call in queued.call_args_list} == {"distributor"}
    assert sorted(name for _, _, name in calls) == ["labels", "plot-exit-types", "plot-response-times", "results"]
    for function, *args in calls:  # what the default cluster would run
        assert function == "distributor.summaries.compute_job_part"
        summaries.compute_job_part(*args)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()["finished"] == 11
    assert _counting_queries(queries.captured_queries) == []


def test_the_reconciler_summarises_jobs_that_ended_before_summaries_were_kept(job):
    """After an upgrade: a job that ended long ago and was never summarised is
    queued too, a few per tick, the newest first, once."""
    Job.objects.filter(pk=job.pk).update(ended_at=timezone.now() - timedelta(days=30))
    newer = Job.objects.create(name="newer", target=job.target, spec={}, variant_count=0, cursor=0,
                               state=Job.State.FINISHED, ended_at=timezone.now() - timedelta(days=20))
    with mock.patch.object(summaries, "NEVER_SUMMARISED_PER_TICK", 1), \
            mock.patch("distributor.background.async_task") as queued:
        summaries.queue_ended_jobs()
        first = {call.args[1] for call in queued.call_args_list}
        summaries.queue_ended_jobs()
        second = {call.args[1] for call in queued.call_args_list} - first
        summaries.queue_ended_jobs()
        assert len(queued.call_args_list) == 2 * len(summaries.JOB_PARTS), "each once"
    assert (first, second) == ({newer.pk}, {job.pk})


def test_a_campaigns_results_are_stored_and_follow_its_jobs(client, alice, job, headers):
    campaign = Campaign.objects.create(name="c", kind=Campaign.Kind.RANDOM, owner=alice, target=job.target, params={},
                                       seed=1, state=Campaign.State.FINISHED)
    CampaignLevel.objects.create(campaign=campaign, number=0, job=job, sets=len(SETS), candidates=len(SETS))
    assert client.get(f"/api/campaigns/{campaign.pk}/results", headers=headers).json()["finished"] == 11
    with CaptureQueriesContext(connection) as queries:
        client.get(f"/api/campaigns/{campaign.pk}/results", headers=headers)
    assert _counting_queries(queries.captured_queries) == []
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    _end_one_more(job)
    Job.objects.filter(pk=job.pk).update(state=Job.State.FINISHED)
    assert client.get(f"/api/campaigns/{campaign.pk}/results", headers=headers).json()["finished"] == 12
