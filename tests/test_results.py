"""Results you can see (issue 14, point 5): the agreement matrix and the
plots of a job and a campaign, counted in the database, every cell a link to
the task-sets it counts, the same figures from the API."""
from __future__ import annotations

import re
from html import unescape

import pytest

from distributor import results
from distributor.analysis import analyse, empty_result
from distributor.campaigns.models import Campaign, CampaignLevel
from distributor.models import Job, TaskSet
from tests.arg_is_time import ArgIsTime
from webapp.models import ApiToken

SCHEDULABLE, UNSCHEDULABLE, RESOURCE = "schedulable", "unschedulable", "resource"


def labels(verdict=None, exact=False, *, rta=None, rta_applies=True, edf_applies=False, u=0.5, error=None) -> dict:
    """An analysis dict as distributor.analysis stores it, with chosen verdicts."""
    analysis = empty_result()
    analysis.update(utilisation=u, verdict=verdict, verdict_exact=exact, verdict_by="rta" if exact else None,
                    error=error)
    analysis["rta"].update(applies=rta_applies, verdict=rta if rta_applies else None, exact=rta_applies)
    analysis["edf"].update(applies=edf_applies)
    analysis["simulation"].update(verdict=verdict, exact=exact)
    return analysis


# (outcome, analysis, state): a hand-built job whose every count is known.
SETS = [
    (SCHEDULABLE, labels(True, True, rta=True, u=0.42), "finished"),
    (SCHEDULABLE, labels(True, True, rta=True, u=0.44), "finished"),
    (SCHEDULABLE, labels(True, False, rta=None, u=0.91), "finished"),  # a sound but not exact yes
    (SCHEDULABLE, labels(False, True, rta=False, u=0.93), "finished"),  # an exact no, measured schedulable
    (UNSCHEDULABLE, labels(True, True, rta=True, u=0.95), "finished"),  # an exact yes, measured a miss
    (UNSCHEDULABLE, labels(False, True, rta=False, u=0.97), "finished"),
    (UNSCHEDULABLE, labels(None, rta_applies=False, u=1.3), "finished"),  # RTA does not apply, no verdict
    (RESOURCE, labels(True, True, rta=True, u=0.2), "finished"),
    (SCHEDULABLE, labels(error="execution-time model: unknown package 'x'"), "finished"),
    (SCHEDULABLE, None, "finished"),  # never labelled
    ("", labels(True, True, rta=True), "bad"),  # not finished: in no count
    ("", None, "running"),
]


@pytest.fixture
def job(stdio_target, alice):
    job = Job.objects.create(name="hand-built", owner=alice, target=stdio_target, spec={},
                             variant_count=len(SETS), cursor=len(SETS))
    TaskSet.objects.bulk_create([TaskSet(job=job, variant=variant, state=state, outcome=outcome, analysis=analysis)
                                 for variant, (outcome, analysis, state) in enumerate(SETS)])
    return job


def test_the_matrix_counts_each_finished_set_once_per_test(job):
    summary = results.summarise(results.tasksets_for(job=job))
    assert (summary.finished, summary.labelled) == (10, 8)
    overall = summary.matrix
    assert overall[SCHEDULABLE]["verdict"] == {"yes": 3, "no": 1, "unknown": 0, "na": 2}
    assert overall[UNSCHEDULABLE]["verdict"] == {"yes": 1, "no": 1, "unknown": 1, "na": 0}
    assert overall[RESOURCE]["verdict"] == {"yes": 1, "no": 0, "unknown": 0, "na": 0}
    assert overall[SCHEDULABLE]["rta"] == {"yes": 2, "no": 1, "unknown": 1, "na": 2}
    assert overall[UNSCHEDULABLE]["rta"] == {"yes": 1, "no": 1, "unknown": 0, "na": 1}
    assert overall[SCHEDULABLE]["edf"] == {"yes": 0, "no": 0, "unknown": 0, "na": 6}  # EDF applies to none
    assert summary.exact[SCHEDULABLE]["verdict"] == {"yes": 2, "no": 1}  # the sound yes is not exact
    assert summary.exact[SCHEDULABLE]["liu_layland"] == {"yes": 0, "no": 0}  # a bound is never exact
    for outcome in results.OUTCOMES:  # every finished set of an outcome is in exactly one column of each test
        per_outcome = sum(1 for o, _, state in SETS if o == outcome and state == "finished")
        assert all(sum(cells.values()) == per_outcome for cells in overall[outcome].values())
    assert (summary.disagree, summary.disagree_exact) == (2, 2)  # the exact no measured schedulable, and vice versa


def test_the_matrix_reads_the_analysis_as_it_labels_a_set(stdio_target):
    """Real labels, not hand-built ones: a failed bound test says nothing
    (unknown, not no: its verdict is yes or unknown), a test that does not
    apply is na, an unlabelled set is na everywhere, a bad set is in no count."""
    def periodic(task_id: int, c: int, period: int, priority: int) -> dict:
        return {"id": task_id, "pkg": "idle", "arg1": c, "period": period, "priority": priority, "deadline": 0,
                "offset": 0, "numberofjobs": 10, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1,
                "coreoffset": 0}

    good = analyse([periodic(0, 1, 4, 0)], ArgIsTime())  # U = 0.25: every bound passes, RTA yes
    bad = analyse([periodic(0, 2, 4, 0), periodic(1, 3, 6, 1)], ArgIsTime())  # U = 1: bounds fail, RTA no
    sets = [(SCHEDULABLE, good, "finished"), (UNSCHEDULABLE, bad, "finished"), (SCHEDULABLE, bad, "finished"),
            (SCHEDULABLE, None, "finished"), (UNSCHEDULABLE, good, "finished"), ("", good, "bad")]
    job = Job.objects.create(name="real labels", target=stdio_target, spec={}, variant_count=len(sets),
                             cursor=len(sets))
    TaskSet.objects.bulk_create([TaskSet(job=job, variant=variant, state=state, outcome=outcome, analysis=analysis)
                                 for variant, (outcome, analysis, state) in enumerate(sets)])
    summary = results.summarise(results.tasksets_for(job=job))
    assert summary.finished == 5
    assert summary.matrix[SCHEDULABLE]["rta"] == {"yes": 1, "no": 1, "unknown": 0, "na": 1}
    assert summary.matrix[UNSCHEDULABLE]["rta"] == {"yes": 1, "no": 1, "unknown": 0, "na": 0}
    for test in ("liu_layland", "hyperbolic"):
        assert summary.matrix[SCHEDULABLE][test] == {"yes": 1, "no": 0, "unknown": 1, "na": 1}
        assert summary.matrix[UNSCHEDULABLE][test] == {"yes": 1, "no": 0, "unknown": 1, "na": 0}
    assert summary.matrix[SCHEDULABLE]["edf"]["na"] == 3  # fixed priorities: EDF applies to none
    assert summary.matrix[UNSCHEDULABLE]["verdict"] == {"yes": 1, "no": 1, "unknown": 0, "na": 0}
    assert summary.disagree == 2  # good measured unschedulable, bad measured schedulable


def test_the_bins_count_the_timed_labelled_sets(job):
    bins = results.summarise(results.tasksets_for(job=job)).bins
    assert sorted(bins) == [8, 18, 19, 26]  # U 0.42, 0.44 | 0.91, 0.93 | 0.95, 0.97 | 1.3; resource is no timing result
    assert bins[8]["measured"] == [2, 2] and bins[18]["measured"] == [2, 2] and bins[19]["measured"] == [0, 2]
    assert bins[18]["verdict"] == [1, 2] and bins[18]["rta"] == [0, 1]  # RTA's unknown is left out of its share
    assert bins[26]["rta"] == [0, 0] and bins[26]["measured"] == [0, 1]


def test_every_cell_filter_selects_exactly_the_sets_it_counts(job):
    summary = results.summarise(results.tasksets_for(job=job))
    finished = results.with_labels(TaskSet.objects.filter(job=job, state="finished"))
    for outcome in results.OUTCOMES:
        for test in results.TEST_KEYS:
            for verdict in results.VERDICTS:
                cell = finished.filter(results.cell_q(test, verdict), outcome=outcome)
                assert cell.count() == summary.matrix[outcome][test][verdict], (outcome, test, verdict)
            for verdict in ("yes", "no"):
                cell = finished.filter(results.cell_q(test, verdict, exact=True), outcome=outcome)
                assert cell.count() == summary.exact[outcome][test][verdict], (outcome, test, verdict, "exact")
    assert sorted(finished.filter(results.disagrees_q()).values_list("variant", flat=True)) == [3, 4]


def _links(page: str, selector: str) -> list[str]:
    return [unescape(link) for link in re.findall(rf'<a class="{selector}" href="([^"]+)"', page)]


def _variants(page: str) -> list[int]:
    table = page.split('id="taskset-table"', 1)[1] if 'id="taskset-table"' in page else ""
    return [int(v) for v in re.findall(r'<tr><td class="num">(\d+)</td>', table)]


def test_the_job_page_shows_the_matrix_and_each_number_lists_its_sets(client, alice, job):
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "These figures cover <strong>10</strong> finished task-sets of 12 started; 8 of them carry" in page
    links = _links(page, "count")
    assert len(links) == sum(1 for o in results.OUTCOMES for t in results.TEST_KEYS for v in results.VERDICTS
                             if results.summarise(results.tasksets_for(job=job)).matrix[o][t][v])
    for link in links:
        shown = _variants(client.get(link).content.decode())
        number = re.search(rf'href="{re.escape(link.replace("&", "&amp;"))}">(\d+)</a>', page).group(1)
        assert len(shown) == int(number), link
    overall_no_schedulable = next(link for link in links if "outcome=schedulable&test=verdict&verdict=no" in link)
    assert _variants(client.get(overall_no_schedulable).content.decode()) == [3]
    disagree = re.search(r'<p id="disagree"><a href="([^"]+)"', page).group(1)
    assert _variants(client.get(unescape(disagree)).content.decode()) == [3, 4]
    exact = _links(page, "small exact nowrap")
    assert exact and all("exact=1" in link for link in exact)
    for name in ("schedulability", "response-times", "exit-types"):
        assert f'src="/jobs/{job.pk}/{name}.svg"' in page


def test_the_list_filters_combine_and_junk_is_ignored(client, alice, job):
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/?test=rta&verdict=na").content.decode()
    assert _variants(page) == [6, 8, 9, 11]  # RTA does not apply, an analysis error, no labels (11 still runs)
    assert _variants(client.get(f"/jobs/{job.pk}/?test=rta&verdict=na&outcome=unschedulable").content.decode()) == [6]
    assert len(_variants(client.get(f"/jobs/{job.pk}/?test=pie&verdict=maybe").content.decode())) == len(SETS)
    assert _variants(client.get(f"/jobs/{job.pk}/?disagrees=1&state=finished").content.decode()) == [3, 4]


def test_the_plot_files_need_a_login_and_a_known_name(client, alice, job):
    for name in ("schedulability", "response-times", "exit-types"):
        assert client.get(f"/jobs/{job.pk}/{name}.svg").status_code == 302  # to the login page
    client.force_login(alice)
    svg = client.get(f"/jobs/{job.pk}/schedulability.svg")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert f'filename="job-{job.pk}-schedulability.svg"' in svg["Content-Disposition"]
    assert b'data-name="measured"' in svg.content
    assert client.get(f"/jobs/{job.pk}/pie.svg").status_code == 404
    assert client.get(f"/jobs/{job.pk + 1}/schedulability.svg").status_code == 404


def test_the_api_gives_the_same_figures_and_filters(client, alice, job):
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}
    document = client.get(f"/api/jobs/{job.pk}/results", headers=headers).json()
    assert (document["finished"], document["started"], document["disagree"]) == (10, 12, 2)
    assert document["agreement"][SCHEDULABLE]["rta"] == {"yes": 2, "no": 1, "unknown": 1, "na": 2}
    assert document["agreement_exact"][UNSCHEDULABLE]["verdict"] == {"yes": 1, "no": 1}
    assert document["plots"]["schedulability"].endswith(f"/jobs/{job.pk}/schedulability.svg")
    bins = {row["utilisation_from"]: row for row in document["schedulability"]}
    assert bins[0.9]["measured"] == {"schedulable": 2, "of": 2}
    listing = client.get(document["tasksets"][SCHEDULABLE]["rta"]["na"], headers=headers).json()
    assert sorted(row["variant"] for row in listing["results"]) == [8, 9]
    listing = client.get(document["disagree_tasksets"], headers=headers).json()
    assert sorted(row["variant"] for row in listing["results"]) == [3, 4]
    for query, field in (("test=pie&verdict=yes", "test"), ("test=rta", "verdict"), ("test=rta&verdict=nope", "verdict"),
                         ("test=rta&verdict=na&exact=1", "exact"), ("disagrees=perhaps", "disagrees")):
        response = client.get(f"/api/jobs/{job.pk}/tasksets?{query}", headers=headers)
        assert response.status_code == 400 and field in response.json()["errors"], query
    assert client.get(f"/api/jobs/{job.pk + 7}/results", headers=headers).status_code == 404


def test_the_campaign_page_and_its_task_set_list(client, alice, job):
    campaign = Campaign.objects.create(name="c", kind="random", target=job.target, owner=alice, seed=1, params={})
    CampaignLevel.objects.create(campaign=campaign, number=1, job=job, sets=len(SETS), candidates=len(SETS))
    assert client.get(f"/campaigns/{campaign.pk}/tasksets").status_code == 302
    client.force_login(alice)
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "These figures cover <strong>10</strong> finished task-sets of 12 started" in page
    disagree = unescape(re.search(r'<p id="disagree"><a href="([^"]+)"', page).group(1))
    assert disagree.startswith(f"/campaigns/{campaign.pk}/tasksets?")
    listing = client.get(disagree).content.decode()
    assert re.findall(r'<td class="num">(\d+)</td>', listing) == ["3", "4"]
    document = client.get(f"/api/campaigns/{campaign.pk}/results").json()
    assert document["agreement"] == results.summarise(results.tasksets_for(job=job)).matrix
    assert client.get(f"/campaigns/{campaign.pk}/exit-types.svg").status_code == 200
