"""The browsing pages: jobs, task-sets, machines and their consoles, targets,
uploads, tokens and the admin's actions — and their bounded query counts."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest

from distributor.analysis import ANALYSIS_VERSION
from django.core.files.uploadedfile import SimpleUploadedFile

from bench.web_pages import build
from distributor.analysis import analyse, empty_result
from distributor.models import Attempt, Binary, Blob, BootImage, Event, Job, Target, TaskJob, TaskSet
from webapp.models import ApiToken, hash_token
from tests.arg_is_time import ArgIsTime


@pytest.fixture
def campaign(db, alice):
    return build(120, 4, owner=alice)


def test_the_job_page_shows_counts_progress_and_exports(client, alice, campaign):
    client.force_login(alice)
    job = campaign["job"]
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert f"{job.finished_count} finished" in page and f"{job.bad_count} bad" in page and "4 running" in page
    for fmt in ("taskjobs-csv", "tasksets-csv", "sqlite"):
        assert f'href="/jobs/{job.pk}/export/{fmt}"' in page
    assert page.count('<tr><td class="num">') == 50  # one page of task-sets
    assert 'action="/jobs/%d/cancel"' % job.pk in page  # alice owns it


def test_the_task_set_table_filters_by_state_and_error(client, alice, campaign):
    client.force_login(alice)
    job = campaign["job"]
    page = client.get(f"/jobs/{job.pk}/?state=bad").content.decode()
    table = re.search(r'<table id="taskset-table">(.*?)</table>', page, re.S).group(1)
    assert table.count("<tr><td") == job.bad_count == 2
    assert "target silent for 40 s" in table
    page = client.get(f"/jobs/{job.pk}/?error=1&machine=junk&state=nonsense").content.decode()
    assert re.search(r'<table id="taskset-table">(.*?)</table>', page, re.S).group(1).count("<tr><td") == 2


def test_pages_cost_a_bounded_number_of_queries(client, alice, django_assert_max_num_queries):
    client.force_login(alice)
    data = build(300, 16, owner=alice)
    with django_assert_max_num_queries(22):  # the first view counts the results and stores them
        client.get(f"/jobs/{data['job'].pk}/")
    with django_assert_max_num_queries(11):  # later views read them (distributor/summaries.py)
        client.get(f"/jobs/{data['job'].pk}/")
    with django_assert_max_num_queries(12):
        client.get(f"/tasksets/{data['taskset'].pk}/")
    with django_assert_max_num_queries(10):
        client.get("/jobs/")
    with django_assert_max_num_queries(10):
        client.get(f"/machines/{data['machines'][0].pk}/")


def test_the_task_set_page_shows_tasks_attempts_and_raw_events(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    Attempt.objects.create(taskset=taskset, number=1, result="failed", error="target reported EXIT_ERROR for task 2")
    Event.objects.create(taskset=taskset, attempt=2, seq=0, task_id=1, type="START", time_ms=77)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    tasks = re.search(r'<table id="tasks">(.*?)</table>', page, re.S).group(1)
    assert tasks.count("<tr><td") == 3 and "100M" in tasks and "40 ms" in tasks
    assert "target reported EXIT_ERROR for task 2" in page
    assert "attempt 1 <span" in page and "attempt 2 <span" in page
    events = re.search(r'<table id="events-table">(.*?)</table>', page, re.S).group(1)
    assert ">77<" in events  # the latest attempt is shown first
    older = client.get(f"/tasksets/{taskset.pk}/?attempt=1").content.decode()
    assert ">77<" not in re.search(r'<table id="events-table">(.*?)</table>', older, re.S).group(1)


def _task(task_id: int, c: int, period: int, priority: int) -> dict:
    return {"id": task_id, "pkg": "idle", "arg1": c, "period": period, "priority": priority, "deadline": 0,
            "offset": 0, "numberofjobs": 4, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1, "coreoffset": 0}


def _rows(page: str, table_id: str) -> list[list[str]]:
    """The body cells of a table as text."""
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def _text(page: str, element_id: str) -> str:
    inner = re.search(rf'id="{element_id}">(.*?)</(?:dd|p|div)>', page, re.S).group(1)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", inner)).split())


def test_the_task_set_page_says_the_outcome_and_its_first_miss(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    TaskSet.objects.filter(pk=taskset.pk).update(outcome="unschedulable", first_miss_task=2, first_miss_job=0,
                                                 first_miss_kind="DEADLINE", first_miss_ms=39)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    assert '<span class="badge unschedulable">unschedulable</span> A timing miss' in page
    assert _text(page, "first-miss") == "task 2, job 0: ended after its deadline at 39 ms show on the chart"
    assert 'href="?from=0&amp;to=59#schedule"' in page  # from before its job's release (period 40) to after the miss
    all_exit = not TaskJob.objects.filter(taskset=taskset).exclude(exit_type="EXIT").exists()
    assert _text(page, "all-exit").startswith("yes" if all_exit else "no")

    TaskSet.objects.filter(pk=taskset.pk).update(first_miss_kind="EXIT_PERIOD")
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    assert _text(page, "first-miss").startswith(
        "task 2, job 0: was still running at its period end and was killed (EXIT_PERIOD), missed at 39 ms")


def test_out_of_memory_is_the_outcome_resource_not_a_miss(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    TaskSet.objects.filter(pk=taskset.pk).update(outcome="resource")
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    assert '<span class="badge resource">resource</span>' in page and "did not fit the target" in page
    assert 'id="first-miss"' not in page
    job_page = client.get(f"/jobs/{campaign['job'].pk}/").content.decode()
    assert '<option value="resource">' in job_page  # the job page's outcome filter offers it


def test_the_analysis_is_a_table_of_tests_and_of_tasks(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    analysis = analyse([_task(0, 1, 4, 0), _task(1, 1, 8, 1)], ArgIsTime())
    # RTA that stopped at its iteration cap for task 1: unknown, neither exact nor sufficient.
    analysis["rta"] = {"applies": True, "exact": False, "verdict": None}
    analysis["tasks"][1].update(wcrt_ms=None, rta_meets=None, rta_exact=False)
    TaskSet.objects.filter(pk=taskset.pk).update(analysis=analysis)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    tests = {row[0]: row[1:] for row in _rows(page, "analysis-tests")}
    assert list(tests) == ["Liu & Layland bound", "Hyperbolic bound", "Response-time analysis", "EDF processor demand",
                           "Simulation of the job set", "Overall"]
    assert tests["Liu & Layland bound"][:3] == ["yes", "yes", "sufficient"]  # applies, verdict, exact
    assert "bound n(2^1/n − 1) 0.828427" in tests["Liu & Layland bound"][3]
    assert tests["Response-time analysis"][:3] == ["yes", "unknown", "—"]
    assert tests["EDF processor demand"][:3] == ["no", "unknown", "—"]
    assert tests["Simulation of the job set"][:3] == ["yes", "yes", "exact"]
    assert "jobs 8" in tests["Simulation of the job set"][3] and "misses 0" in tests["Simulation of the job set"][3]
    assert tests["Overall"][:3] == ["—", "yes", "exact"] and "by simulation" in tests["Overall"][3]
    tasks = _rows(page, "analysis-tasks")
    assert tasks == [["0", "1", "4", "4", "0.25", "1", "meets", "exact", "1", "0"],
                     ["1", "1", "8", "8", "0.125", "unknown", "unknown", "—", "2", "0"]]
    assert _text(page, "analysis-provenance") == f"analysis version {ANALYSIS_VERSION} · execution-time model arg-is-time, version 3"
    assert _text(page, "analysis-verdict") == "yes (exact, by simulation) details"


def test_an_exact_verdict_that_contradicts_the_run_is_pointed_out(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    # τ1 (C=2, T=4) over τ2 (C=3, T=6): τ2 misses at 6, exactly; the run says schedulable.
    analysis = analyse([_task(0, 2, 4, 0), _task(1, 3, 6, 1)], ArgIsTime())
    TaskSet.objects.filter(pk=taskset.pk).update(outcome="schedulable", analysis=analysis)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    assert _rows(page, "analysis-tests")[2][:4] == ["Response-time analysis", "yes", "no", "exact"]
    assert _text(page, "contradiction").startswith("The analysis says unschedulable (exact, by simulation)")


def test_an_analysis_of_version_1_still_shows(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    version_1 = {  # as stored before the analysis had a version, verdict_exact, verdict_by or per-task rta_exact
        "schema": 1, "etm": {"name": "seeds", "version": 1}, "policy": "fp", "utilisation": 0.5,
        "utilisation_max_core": 0.5, "back_to_back": 0,
        "tasks": [{"id": 0, "core": 0, "c_ms": 2, "period_ms": 4, "deadline_ms": 4, "u": 0.5, "wcrt_ms": 2,
                   "rta_meets": True, "sim_wcrt_ms": 2, "sim_misses": 0}],
        "liu_layland": {"applies": True, "bound": 1.0, "pass": True, "verdict": True},
        "hyperbolic": {"applies": True, "product": 1.5, "pass": True, "verdict": True},
        "rta": {"applies": True, "exact": True, "verdict": True},
        "edf": {"applies": False, "exact": False, "verdict": None, "points": 0},
        "simulation": {"exact": True, "verdict": True, "jobs": 10, "misses": 0, "first_miss": None},
        "verdict": True, "error": None,
    }
    TaskSet.objects.filter(pk=taskset.pk).update(analysis=version_1)
    response = client.get(f"/tasksets/{taskset.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert _rows(page, "analysis-tests")[-1][:3] == ["Overall", "—", "yes"]  # exactness not said: not guessed
    assert _rows(page, "analysis-tasks") == [["0", "2", "4", "4", "0.5", "2", "meets", "—", "2", "0"]]
    assert _text(page, "analysis-provenance") == "analysis version 1 · execution-time model seeds, version 1"
    TaskSet.objects.filter(pk=taskset.pk).update(analysis={"utilisation": 0.5, "rta": {"verdict": False}, "tasks": [{}]})
    sparse = client.get(f"/tasksets/{taskset.pk}/")
    assert sparse.status_code == 200 and "Response-time analysis" in sparse.content.decode()


def test_an_analysis_that_failed_shows_its_error(client, alice, campaign):
    client.force_login(alice)
    taskset = campaign["taskset"]
    TaskSet.objects.filter(pk=taskset.pk).update(
        analysis={**empty_result(ArgIsTime()), "error": "execution-time model: no time for package 'nope'"})
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    assert _text(page, "analysis-error") == "The analysis failed: execution-time model: no time for package 'nope'"
    assert 'id="analysis-tests"' not in page


def test_cancel_is_for_the_owner_or_staff(client, alice, staff, campaign, django_user_model):
    job = campaign["queued"][0]
    client.force_login(django_user_model.objects.create_user("bob"))
    assert client.post(f"/jobs/{job.pk}/cancel").status_code == 403
    client.force_login(alice)
    assert client.post(f"/jobs/{job.pk}/cancel").status_code == 302
    assert Job.objects.get(pk=job.pk).state == Job.State.CANCELLED


def test_resubmit_queues_a_copy_owned_by_whoever_asked(client, staff, campaign):
    client.force_login(staff)
    response = client.post(f"/jobs/{campaign['job'].pk}/resubmit")
    copy = Job.objects.latest("pk")
    assert response["Location"] == f"/jobs/{copy.pk}/"
    assert (copy.owner, copy.spec, copy.state) == (staff, campaign["job"].spec, Job.State.QUEUED)


def test_an_export_streams_csv(client, alice, campaign):
    client.force_login(alice)
    response = client.get(f"/jobs/{campaign['job'].pk}/export/tasksets-csv")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == TaskSet.objects.filter(job=campaign["job"]).count()
    assert client.get(f"/jobs/{campaign['job'].pk}/export/pdf").status_code == 404


def test_the_console_tail_is_the_end_of_the_file_without_escapes(client, alice, campaign, settings):
    client.force_login(alice)
    machine = campaign["machines"][1]
    console = settings.DATA_DIR / "consoles" / f"{machine.target.name}-{machine.slot}.log"
    console.parent.mkdir(parents=True, exist_ok=True)
    console.write_bytes(b"old line\n" * 10_000 + b"\x1b[32mGenode booted\x1b[0m\r\nlast <line>\n")
    try:
        text = client.get(f"/machines/{machine.pk}/console").content.decode()
    finally:
        console.unlink()
    assert text.rstrip().endswith("last &lt;line&gt;")
    assert "Genode booted\n" in text and "\x1b" not in text
    assert "the last 64 KB" in text
    assert text.count("old line") < 64 * 1024 / 9 + 1


def test_a_machine_without_files_says_so(client, alice, campaign):
    client.force_login(alice)
    machine = campaign["machines"][0]
    page = client.get(f"/machines/{machine.pk}/").content.decode()
    assert "(the console is empty)" in page and "no machine log yet" in page
    assert client.get(f"/machines/{machine.pk}/log.log").status_code == 404
    assert client.get(f"/machines/{machine.pk}/passwd.log").status_code == 404


def test_the_machine_log_downloads(client, alice, campaign, settings):
    client.force_login(alice)
    machine = campaign["machines"][0]
    log = settings.LOG_DIR / "machines" / f"{machine.target.name}-{machine.slot}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("machine log\n")
    try:
        response = client.get(f"/machines/{machine.pk}/log.log")
        assert b"".join(response.streaming_content) == b"machine log\n"
    finally:
        log.unlink()


def test_staff_create_a_target_and_errors_name_the_setting(client, staff, db):
    client.force_login(staff)
    form = {"name": "dry2", "kind": "stdio", "settings": '{"print": false, "colour": 1}', "addresses": "", "host": ""}
    response = client.post("/targets/new", form)
    assert response.status_code == 400
    assert "colour: unknown setting for kind" in response.content.decode()
    response = client.post("/targets/new", {**form, "settings": '{"print": false}', "is_default": "on"})
    assert response.status_code == 302
    target = Target.objects.get(name="dry2")
    assert target.settings == {"print": False} and target.is_default


def test_a_new_default_target_replaces_the_old_default(client, staff, db):
    client.force_login(staff)
    old = Target.objects.create(name="old", kind="stdio", is_default=True)
    response = client.post(f"/targets/{old.pk}/edit", {"name": "old", "kind": "stdio", "settings": "{}", "addresses": ""})
    assert response.status_code == 302 and not Target.objects.get(pk=old.pk).is_default
    client.post("/targets/new", {"name": "new", "kind": "stdio", "settings": "{}", "is_default": "on"})
    client.post(f"/targets/{old.pk}/edit", {"name": "old", "kind": "stdio", "settings": "{}", "is_default": "on"})
    assert list(Target.objects.filter(is_default=True).values_list("name", flat=True)) == ["old"]


def test_a_binary_is_stored_in_the_database_with_its_checksum(client, staff):
    import hashlib

    client.force_login(staff)
    response = client.post("/files/binaries", {"file": SimpleUploadedFile("a-name-of-20-bytes", b"\x7fELF binary")})
    assert response.status_code == 400 and "1-15 bytes" in response.content.decode()
    response = client.post("/files/binaries", {"file": SimpleUploadedFile("upload.bin", b"\x7fELF binary"), "name": "hey"})
    assert response.status_code == 302
    binary = Binary.objects.get(name="hey")
    assert binary.sha256 == hashlib.sha256(b"\x7fELF binary").hexdigest() and binary.size == 11
    assert b"".join(binary.blob().chunks()) == b"\x7fELF binary"
    assert binary.sha256[:16] in client.get("/files/").content.decode()


def test_uploads_over_the_limit_are_refused(client, staff, settings):
    settings.IMAGE_MAX_BYTES = 1024
    client.force_login(staff)
    response = client.post("/files/images", {"file": SimpleUploadedFile("image.elf", b"x" * 2000)})
    assert response.status_code == 400 and "the limit is 1,024 bytes" in response.content.decode()
    assert not Blob.objects.exists() and not BootImage.objects.exists()


def test_an_image_goes_through_the_same_upload_and_a_new_one_replaces_the_old(
        client, staff):
    client.force_login(staff)
    long_name = "k" * 120 + ".elf"
    response = client.post("/files/images", {"file": SimpleUploadedFile(long_name, b"\x7fELF one")}, follow=True)
    assert "Stored boot image" in response.content.decode()
    assert BootImage.objects.get().name == long_name[:100]  # a file's name is cut to the column
    response = client.post("/files/images", {"file": SimpleUploadedFile("x.elf", b"x"), "name": "n" * 101})
    assert response.status_code == 400  # a typed name is not cut
    first = BootImage.objects.get(name=long_name[:100]).sha256
    response = client.post("/files/images", {"file": SimpleUploadedFile("other", b"\x7fELF two"),
                                             "name": long_name[:100]})
    assert response.status_code == 302
    image = BootImage.objects.get()
    assert b"".join(image.blob().chunks()) == b"\x7fELF two" and image.size == 8
    assert not Blob.objects.filter(pk=first).exists(), "content nothing names any more is gone"
    page = client.get("/files/").content.decode()
    assert 'id="id_binary_file"' in page and 'id="id_bootimage_file"' in page


def test_a_binary_name_follows_the_same_rule_on_the_web_and_the_command_line(client, staff, settings, tmp_path):
    from django.core.management import CommandError, call_command

    settings.MEDIA_ROOT = tmp_path
    client.force_login(staff)
    (tmp_path / "file").write_bytes(b"x")
    for name in ("../etc", "sixteen-bytes-xx", "héllo"):
        response = client.post("/files/binaries", {"file": SimpleUploadedFile("f", b"x"), "name": name})
        assert response.status_code == 400 and "must be 1-15 bytes" in response.content.decode()
        with pytest.raises(CommandError, match="must be 1-15 bytes"):
            call_command("binary", "add", str(tmp_path / "file"), "--name", name)
    assert not Binary.objects.exists()


def test_a_token_is_shown_once_and_can_be_revoked(client, alice):
    client.force_login(alice)
    response = client.post("/profile/tokens/new", {"name": "campaign script"}, follow=True)
    clear = re.search(r'id="new-token">(dst_[^<]+)<', response.content.decode()).group(1)
    token = ApiToken.objects.get()
    assert token.token_hash == hash_token(clear) and token.name == "campaign script"
    assert clear not in client.get("/profile/").content.decode()
    client.post(f"/profile/tokens/{token.pk}/revoke")
    assert not ApiToken.objects.exists()


def test_admin_actions_requeue_and_mark_bad(client, staff, campaign):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    job = campaign["job"]
    bad = TaskSet.objects.filter(job=job, state=TaskSet.State.BAD).first()
    client.post("/admin/distributor/taskset/", {"action": "requeue_bad", "_selected_action": [bad.pk]})
    bad.refresh_from_db()
    job.refresh_from_db()
    assert bad.state == TaskSet.State.QUEUED and job.bad_count == 1
    client.post("/admin/distributor/taskset/", {"action": "mark_queued_bad", "_selected_action": [bad.pk]})
    bad.refresh_from_db()
    job.refresh_from_db()
    assert bad.state == TaskSet.State.BAD and job.bad_count == 2 and bad.last_error == "marked bad by sam"


def test_the_admin_keeps_results_read_only(client, staff, campaign):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    assert client.get("/admin/distributor/event/").status_code == 200
    assert client.get("/admin/distributor/event/add/").status_code == 403
    event = Event.objects.first()
    page = client.get(f"/admin/distributor/event/{event.pk}/change/").content.decode()
    assert 'type="submit" value="Save"' not in page


def test_the_admin_shows_a_jobs_counts_from_its_tallies(client, staff, campaign):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    job = Job.objects.order_by("pk").first()
    done = f"{job.finished_count + job.bad_count} / {job.total} ({job.bad_count} bad)"
    assert job.finished_count > 0 and done in client.get("/admin/distributor/job/").content.decode()
    page = client.get(f"/admin/distributor/job/{job.pk}/change/").content.decode()
    assert f'<div class="readonly">{job.finished_count}</div>' in page


def test_the_unfiltered_job_page_counts_its_task_sets_from_the_cursor(client, alice, campaign):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/jobs/{campaign['job'].pk}/?page=3").content.decode()
    assert not [q["sql"] for q in queries if q["sql"].startswith('SELECT COUNT(*) AS "__count" FROM "distributor_taskset"')]
    assert "page 3 of 3 · 120 rows" in page


def test_the_job_fragment_stops_the_polling_once_the_job_ended(client, alice, campaign):
    client.force_login(alice)
    job = campaign["job"]
    assert client.get(f"/jobs/{job.pk}/live").status_code == 200
    assert f'hx-get="/jobs/{job.pk}/live"' in client.get(f"/jobs/{job.pk}/").content.decode()
    job.cancel()
    response = client.get(f"/jobs/{job.pk}/live")
    assert response.status_code == 286 and 'id="job-state">cancelled<' in response.content.decode()
    assert "hx-get" not in client.get(f"/jobs/{job.pk}/").content.decode().split('id="job-live"')[1][:20]


@pytest.mark.parametrize("query", ["machine=99999999999999999999999", "variant=99999999999999999999999",
                                   "machine=%C2%B2", "variant=%D9%A3", "page=99999999999999999999"])
def test_odd_numbers_in_the_job_page_query_are_ignored(client, alice, campaign, query):
    client.force_login(alice)
    assert client.get(f"/jobs/{campaign['job'].pk}/?{query}").status_code == 200


@pytest.mark.parametrize("url", ["/jobs/?q=%C2%B2", "/jobs/?q=99999999999999999999999", "/tasksets/{ts}/?from=%C2%B2",
                                 "/tasksets/{ts}/?to=99999999999999999999&attempt=%C2%B2"])
def test_odd_numbers_elsewhere_are_ignored(client, alice, campaign, url):
    client.force_login(alice)
    assert client.get(url.format(ts=campaign["taskset"].pk)).status_code == 200
