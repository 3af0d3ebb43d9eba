"""manage.py purge: raw events of ended jobs, consoles and logs go; task-jobs
and outcomes stay; --dry-run reports the same and changes nothing."""
from __future__ import annotations

import io
import os
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from distributor import purge
from distributor.models import AuditEntry, Event, Job, Machine, TaskJob, TaskSet
from tests.test_relabel import finished_job

pytestmark = pytest.mark.django_db

OLD = time.time() - 10 * 86400


def with_events(job: Job, per_taskset: int = 3) -> int:
    rows = [Event(taskset=ts, attempt=1, seq=seq, task_id=0, type="START", time_ms=seq)
            for ts in TaskSet.objects.filter(job=job) for seq in range(per_taskset)]
    Event.objects.bulk_create(rows)
    return len(rows)


def with_taskjobs(job: Job) -> int:
    rows = [TaskJob(taskset=ts, task=ts.tasks.first(), job_number=0, release_ms=0, start_ms=0, end_ms=1,
                    exit_type="EXIT") for ts in TaskSet.objects.filter(job=job)]
    TaskJob.objects.bulk_create(rows)
    return len(rows)


@pytest.fixture
def jobs(stdio_target, scripted):
    """An old finished job and one that is still running, each with events and task-jobs."""
    ended = finished_job(stdio_target, 3)
    Job.objects.filter(pk=ended.pk).update(state=Job.State.FINISHED, ended_at=timezone.now() - timedelta(days=10))
    running = finished_job(scripted, 2)
    Job.objects.filter(pk=running.pk).update(state=Job.State.RUNNING, ended_at=None)
    for job in (ended, running):
        with_events(job)
        with_taskjobs(job)
    return ended, running


def files(tmp_path, settings, target_name: str) -> dict[str, list]:
    settings.DATA_DIR, settings.LOG_DIR = tmp_path, tmp_path / "logs"
    made = {"consoles": [], "logs": []}
    for kind, folder in (("consoles", tmp_path / "consoles"), ("logs", tmp_path / "logs" / "machines")):
        folder.mkdir(parents=True)
        for name, old in ((f"{target_name}-0.log", True), (f"{target_name}-0.log.1", True),
                          (f"{target_name}-1.log", False), (f"{target_name}-7.log", True), ("notes.txt", True)):
            path = folder / name
            path.write_bytes(b"x" * 100)
            if old:
                os.utime(path, (OLD, OLD))
            made[kind].append(path)
    return made


def run(*args) -> str:
    out = io.StringIO()
    call_command("purge", *args, stdout=out)
    return out.getvalue()


def test_a_dry_run_reports_and_changes_nothing(jobs, stdio_target, tmp_path, settings):
    made = files(tmp_path, settings, stdio_target.name)
    before = (Event.objects.count(), TaskJob.objects.count())
    output = run("--before", (timezone.now() - timedelta(days=1)).date().isoformat(), "--dry-run")
    assert "events: would remove 9 raw events of 1 job(s)" in output
    assert "consoles: would remove 3 file(s), 300 bytes" in output and "logs: would remove 3 file(s)" in output
    assert "nothing was changed" in output
    assert (Event.objects.count(), TaskJob.objects.count()) == before
    assert all(path.exists() for paths in made.values() for path in paths)
    assert not AuditEntry.objects.exists()


def test_purge_removes_the_ended_jobs_events_and_keeps_taskjobs_and_outcomes(jobs, stdio_target, tmp_path,
                                                                             settings, monkeypatch):
    ended, running = jobs
    monkeypatch.setattr(purge, "CHUNK_TASKSETS", 2)  # three task-sets: two chunks
    outcomes = list(TaskSet.objects.filter(job=ended).order_by("pk").values_list("state", "outcome", "analysis"))
    output = run("--before", (timezone.now() - timedelta(days=1)).isoformat(), "--events")
    assert "events: removed 9 raw events of 1 job(s)" in output and "consoles" not in output
    assert not Event.objects.filter(taskset__job=ended).exists()
    assert Event.objects.filter(taskset__job=running).count() == 6  # a running job is never touched
    assert TaskJob.objects.filter(taskset__job=ended).count() == 3
    assert list(TaskSet.objects.filter(job=ended).order_by("pk").values_list("state", "outcome", "analysis")) == outcomes
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.changes["events"], entry.changes["kinds"]) == ("purge", 9, ["events"])


def test_a_job_that_ended_after_the_date_keeps_its_events(jobs):
    ended, _ = jobs
    assert "removed 0 raw events of 0 job(s)" in run("--before", (timezone.now() - timedelta(days=11)).date().isoformat(),
                                                     "--events")
    assert Event.objects.filter(taskset__job=ended).count() == 9


def test_old_consoles_and_logs_go_unless_a_live_machine_writes_them(stdio_target, tmp_path, settings):
    made = files(tmp_path, settings, stdio_target.name)
    Machine.objects.create(target=stdio_target, slot=7, host="h1", state=Machine.State.IDLE)
    output = run("--before", timezone.now().date().isoformat(), "--consoles", "--logs")
    assert "consoles: removed 2 file(s), 200 bytes" in output and "logs: removed 2 file(s)" in output
    for paths in made.values():
        gone = {path.name for path in paths if not path.exists()}
        assert gone == {f"{stdio_target.name}-0.log", f"{stdio_target.name}-0.log.1"}  # not recent, live, or foreign


@pytest.mark.parametrize("args, message", [
    (["--before", "last week"], "--before: 'last week' is not a date"),
    (["--before", "2999-01-01"], "--before: 2999-01-01 is in the future"),
])
def test_a_bad_date_is_refused_naming_the_option(db, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_before_is_required(db):
    with pytest.raises(CommandError, match="--before"):
        run("--events")
