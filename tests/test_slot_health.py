"""Slot health (issue 15, item 2) and reboots between task-sets (item 1):
the Slot model's transitions, the pool settings, the reconciler placing
nothing on a slot out of service and launching health checks, the
operator's maintenance from the command line, the API and the dashboard,
and whole machines in threads of the test against the scripted target
(tests/fake_sessions.py: ``broken_slots`` fail every task-set). The real
cluster against task-loader peers is tests/test_slot_health_engine.py."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from distributor import reconciler
from distributor.audit import cli_actor
from distributor.models import Attempt, AuditEntry, Job, Machine, Slot, Target, TaskSet
from distributor.queue import submit_job
from tests.fake_sessions import ScriptedSession
from tests.inprocess import run_launched, variants_file
from webapp.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


@pytest.fixture
def pool(db):
    """A pool of four addressed slots (its machines are never run here)."""
    return Target.objects.create(name="boards", kind="stdio", addresses=[f"10.0.0.{i}:3001" for i in range(4)])


def health(target: Target, index: int) -> str:
    return Slot.objects.get(target=target, index=index).health


# -- the model -------------------------------------------------------------------


def test_failures_of_different_tasksets_in_a_row_quarantine_a_slot_and_a_success_heals_a_suspect_one(scripted):
    scripted.settings = {"quarantine_after": 3}
    assert Slot.record_failure(scripted, 0, "crashed", taskset_id=1).health == Slot.Health.SUSPECT
    Slot.record_success(scripted, 0)
    slot = Slot.objects.get(target=scripted, index=0)
    assert (slot.health, slot.failures_in_a_row, slot.cause) == (Slot.Health.HEALTHY, 0, "")

    for taskset_id in (1, 2):
        Slot.record_failure(scripted, 0, "crashed", taskset_id=taskset_id)
    Slot.record_failure(scripted, 0, "crashed again", taskset_id=2)  # the same one again: no count
    assert Slot.objects.get(target=scripted, index=0).failures_in_a_row == 2
    slot = Slot.record_failure(scripted, 0, "crashed at last", taskset_id=3)
    assert slot.health == Slot.Health.QUARANTINED
    assert slot.cause == "3 target failures in a row; the last: crashed at last"
    assert slot.next_check_at > timezone.now() + timedelta(seconds=55)  # health_check_every: 60 s by default
    Slot.record_success(scripted, 0)
    assert health(scripted, 0) == Slot.Health.QUARANTINED, "only its health check returns it"


def test_a_failed_health_check_waits_twice_as_long_and_a_passed_one_heals(scripted):
    scripted.settings = {"quarantine_after": 1, "health_check_every": 10}
    Slot.record_failure(scripted, 0, "hung")
    Slot.check_failed(scripted, 0, "still hung")
    Slot.check_failed(scripted, 0, "hung once more")
    slot = Slot.objects.get(target=scripted, index=0)
    assert slot.checks_failed == 2 and slot.cause.endswith("health check 2 failed: hung once more")
    assert timedelta(seconds=39) < slot.next_check_at - timezone.now() <= timedelta(seconds=40)
    assert Slot.check_passed(scripted, 0)
    slot.refresh_from_db()
    assert (slot.health, slot.cause, slot.failures_in_a_row, slot.next_check_at) == (Slot.Health.HEALTHY, "", 0, None)


def test_a_slot_in_maintenance_stays_there_whatever_its_target_does(scripted):
    Slot.set_maintenance(scripted, 1, "new power supply")
    Slot.record_failure(scripted, 1, "crashed")
    assert not Slot.check_passed(scripted, 1)
    slot = Slot.objects.get(target=scripted, index=1)
    assert (slot.health, slot.cause, slot.failures_in_a_row) == (Slot.Health.MAINTENANCE, "new power supply", 0)


@pytest.mark.parametrize("pool_settings, field", [
    ({"quarantine_after": 0}, "settings.quarantine_after"),
    ({"quarantine_after": True}, "settings.quarantine_after"),
    ({"health_check_every": "1m"}, "settings.health_check_every"),
    ({"reboot_every_taskset": 1}, "settings.reboot_every_taskset"),
    ({"health_check": [1]}, "settings.health_check"),
    ({"health_check": {"tasksets": []}}, "settings.health_check"),
    ({"quarantin_after": 3}, "settings.quarantin_after"),
])
def test_bad_pool_settings_are_refused_naming_the_setting(db, pool_settings, field):
    target = Target(name="p", kind="stdio", settings=pool_settings)
    with pytest.raises(ValidationError) as refused:
        target.full_clean()
    assert field in refused.value.message_dict


def test_a_pools_health_check_is_the_first_variant_of_its_taskset_file(db):
    check = {"tasksets": [{"tasks": [{"pkg": "hey", "period": 5, "numberofjobs": [2, 3]}]}]}
    target = Target(name="p", kind="stdio", settings={"health_check": check, "quarantine_after": 2,
                                                      "reboot_every_taskset": True})
    target.full_clean()
    tasks = target.health_check_tasks()
    assert [(t["pkg"], t["period"], t["numberofjobs"]) for t in tasks] == [("hey", 5, 2)]
    assert (target.quarantine_after, target.reboot_every_taskset) == (2, True)
    assert Target(name="q", kind="stdio").health_check_tasks() is None


# -- the reconciler --------------------------------------------------------------


def test_nothing_is_launched_on_a_slot_out_of_service(pool):
    Slot.set_maintenance(pool, 0)
    Slot.objects.create(target=pool, index=1, health=Slot.Health.QUARANTINED, cause="broken",
                        next_check_at=timezone.now() + timedelta(hours=1))
    reconciler.set_max_machines(4)
    submit_job(variants_file(10), target=pool)
    assert sorted(Machine.objects.filter(state__in=Machine.LIVE_STATES).values_list("slot", flat=True)) == [2, 3]


def test_a_due_health_check_gets_one_machine_of_its_own(pool):
    reconciler.set_max_machines(4)
    Slot.objects.create(target=pool, index=2, health=Slot.Health.QUARANTINED, cause="broken",
                        next_check_at=timezone.now() - timedelta(seconds=1))
    reconciler.tick()
    reconciler.tick()
    check = Machine.objects.get(target=pool, slot=2)
    assert check.health_check and check.state == Machine.State.LAUNCHING
    assert Slot.objects.get(target=pool, index=2).next_check_at > timezone.now(), "the next check is pushed out"


def test_maintenance_drains_the_slots_machine_and_resume_does_not_bring_it_back(pool):
    reconciler.set_max_machines(4)
    submit_job(variants_file(10), target=pool)
    Machine.objects.filter(target=pool).update(state=Machine.State.BUSY)  # as if their workers had taken them
    reconciler.set_slot_health(pool, 3, Slot.Health.MAINTENANCE, "firmware update")
    reconciler.resume()
    machine = Machine.objects.get(target=pool, slot=3, state=Machine.State.BUSY)
    assert machine.stop_mode == Machine.StopMode.DRAIN
    assert not Machine.objects.filter(target=pool, stop_mode=Machine.StopMode.DRAIN).exclude(slot=3).exists()


# -- the command line --------------------------------------------------------------


def test_the_command_line_puts_a_slot_into_maintenance_and_back_and_status_shows_it(pool, capsys):
    call_command("distributor", "slot", "boards:2", "maintenance", "--cause", "new fan")
    assert "slot boards:2 maintenance" in capsys.readouterr().out
    call_command("distributor", "status")
    assert "slot boards:2 maintenance — new fan" in capsys.readouterr().out
    status = json.loads(_output(capsys, "distributor", "status", "--json"))
    assert {"target": "boards", "slot": 2, "health": "maintenance", "cause": "new fan"}.items() <= status["slots"][0].items()

    call_command("distributor", "slot", "boards:2", "healthy")
    assert health(pool, 2) == Slot.Health.HEALTHY
    assert audited() == [(cli_actor(), "slot-maintenance", "boards:2", {"health": ["healthy", "maintenance"], "cause": "new fan"}),
                         (cli_actor(), "slot-healthy", "boards:2", {"health": ["maintenance", "healthy"], "cause": ""})]


def audited() -> list[tuple]:
    return list(AuditEntry.objects.order_by("pk").values_list("actor", "action", "subject", "changes"))


def test_reboot_all_is_recorded_with_who_asked(pool, client, staff, capsys):
    call_command("distributor", "reboot")
    client.force_login(staff)
    client.post("/distributor/reboot")
    token = ApiToken.issue(staff, "ops")[1]
    _api(client, "post", "/api/distributor/reboot", token)
    assert [(actor, action) for actor, action, _, _ in audited()] == [
        (cli_actor(), "reboot"), (staff.username, "reboot"), (staff.username, "reboot")]


def _output(capsys, *args) -> str:
    capsys.readouterr()
    call_command(*args)
    return capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["boards", "maintenance"], "'boards' is not TARGET:N"),
    (["boards:x", "maintenance"], "'boards:x' is not TARGET:N"),
    (["boards:²", "maintenance"], "is not TARGET:N"),
    (["nope:1", "maintenance"], "no target named 'nope'"),
    (["boards:4", "maintenance"], "target boards has slots 0 to 3, not 4"),
    (["boards:1", "maintenance", "--cause", "x" * 1001], "--cause is longer than 1000 characters"),
])
def test_the_command_line_refuses_a_bad_slot_naming_it(pool, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("distributor", "slot", *args)
    assert not Slot.objects.exists()


def test_the_command_line_refuses_another_health(pool):
    with pytest.raises(CommandError, match="invalid choice: 'quarantined'"):
        call_command("distributor", "slot", "boards:1", "quarantined")


# -- the API -----------------------------------------------------------------------


def _api(client, method: str, url: str, token: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_the_api_lists_slots_and_staff_set_maintenance(client, pool, alice, staff):
    user_token, staff_token = ApiToken.issue(alice, "script")[1], ApiToken.issue(staff, "ops")[1]
    refused = _api(client, "post", "/api/slots/boards/1", user_token, {"health": "maintenance"})
    assert refused.status_code == 403 and not Slot.objects.exists()

    done = _api(client, "post", "/api/slots/boards/1", staff_token, {"health": "maintenance", "cause": "rewiring"})
    assert done.status_code == 200
    assert done.json() == {"target": "boards", "slot": 1, "health": "maintenance", "cause": "rewiring"}
    listed = _api(client, "get", "/api/slots", user_token).json()["slots"]
    assert [(s["target"], s["slot"], s["health"], s["cause"]) for s in listed] == [("boards", 1, "maintenance", "rewiring")]
    assert _api(client, "get", "/api/status", user_token).json()["slots"] == listed

    back = _api(client, "post", "/api/slots/boards/1", staff_token, {"health": "healthy"})
    assert back.json()["health"] == "healthy"
    assert [(actor, action, subject) for actor, action, subject, _ in audited()] == [
        (staff.username, "slot-maintenance", "boards:1"), (staff.username, "slot-healthy", "boards:1")]


@pytest.mark.parametrize("url, body, status, field", [
    ("/api/slots/boards/1", {"health": "quarantined"}, 400, "health"),
    ("/api/slots/boards/1", {}, 400, "health"),
    ("/api/slots/boards/1", {"health": "healthy", "why": "x"}, 400, "why"),
    ("/api/slots/boards/1", {"health": "maintenance", "cause": 5}, 400, "cause"),
    ("/api/slots/boards/9", {"health": "maintenance"}, 404, "slot"),
    ("/api/slots/nope/1", {"health": "maintenance"}, 404, "target"),
])
def test_the_api_refuses_bad_slot_changes_naming_the_field(client, pool, staff, url, body, status, field):
    token = ApiToken.issue(staff, "ops")[1]
    response = _api(client, "post", url, token, body)
    assert response.status_code == status
    assert field in json.dumps(response.json())
    assert not Slot.objects.exists()


# -- the dashboard ---------------------------------------------------------------


def test_the_dashboard_shows_each_slots_health_and_staff_put_one_into_maintenance(client, pool, staff, alice):
    Slot.record_failure(pool, 0, "target silent for 40 s")
    client.force_login(alice)
    page = client.get("/dashboard/live").content.decode()
    assert 'data-slot="boards:0"' in page and "suspect" in page and "target silent for 40 s" in page
    assert "Maintenance</button>" not in page, "only staff see the buttons"
    assert client.post("/slots/boards/0/maintenance").status_code == 403

    client.force_login(staff)
    assert "Maintenance</button>" in client.get("/dashboard/live").content.decode()
    response = client.post("/slots/boards/0/maintenance", {"cause": "reseating the board"})
    assert response.status_code == 302
    slot = Slot.objects.get(target=pool, index=0)
    assert (slot.health, slot.cause) == (Slot.Health.MAINTENANCE, "reseating the board")
    assert "Back in service</button>" in client.get("/dashboard/live").content.decode()
    client.post("/slots/boards/0/healthy")
    assert health(pool, 0) == Slot.Health.HEALTHY
    assert client.post("/slots/nope/0/healthy").status_code == 404
    # A NUL in the cause was stored as typed: a 500 on PostgreSQL.
    page = client.post("/slots/boards/0/maintenance", {"cause": "disk\x00"}, follow=True).content.decode()
    assert "cause: must be text without control characters" in page and health(pool, 0) == Slot.Health.HEALTHY
    assert [(actor, action) for actor, action, _, _ in audited()] == [
        (staff.username, "slot-maintenance"), (staff.username, "slot-healthy")]


# -- whole machines ----------------------------------------------------------------


@pytest.mark.slow
def test_a_broken_slot_is_quarantined_and_no_taskset_turns_bad_even_with_one_try(scripted):
    """With tries 1, the broken slot's first failure makes its task-set bad;
    the quarantine that follows confirms the target's fault and queues it again."""
    # 20 ms a task-set: the healthy slot cannot run all 40 before the broken one's machine starts.
    scripted.settings = {"duration_ms": 20, "broken_slots": [0], "quarantine_after": 2}
    scripted.save()
    reconciler.set_max_machines(2)
    job = submit_job(variants_file(40), target=scripted, tries=1)
    run_launched()
    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 40, 0)
    slot = Slot.objects.get(target=scripted, index=0)
    assert slot.health == Slot.Health.QUARANTINED
    assert slot.cause == "2 target failures in a row; the last: scripted target of slot 0 is broken"
    on_slot = Attempt.objects.filter(machine__slot=0)
    assert list(on_slot.values_list("result", flat=True)) == [Attempt.Result.FORGIVEN] * 2
    assert job.tasksets.filter(state=TaskSet.State.FINISHED, attempts=1).count() == 40
    stopped = Machine.objects.get(slot=0)
    assert stopped.state == Machine.State.STOPPED and "quarantined" in stopped.last_error


@pytest.mark.slow
def test_task_sets_that_crash_every_target_end_bad_instead_of_quarantining_the_pool_for_ever(scripted):
    """Task-sets that crash any target (a faulty binary) quarantine the slots
    they run on; each slot's health check then passes, so the slot was never
    at fault. A quarantine forgives a task-set's failures at most its job's
    tries times: after that its failures count, and it ends bad."""
    scripted.settings = {"quarantine_after": 3, "health_check_every": 0.1}
    scripted.save()
    reconciler.set_max_machines(2)
    job = submit_job(variants_file(8, crash_at=set(range(6))), target=scripted, tries=2)
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).is_active and time.monotonic() < deadline:
        run_launched(timeout=10)
        time.sleep(0.15)  # a quarantined slot's health check comes due
        reconciler.tick()
    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 2, 6), "it ends"
    for taskset in job.tasksets.filter(state=TaskSet.State.BAD):
        results = list(Attempt.objects.filter(taskset=taskset).values_list("result", flat=True))
        assert results.count(Attempt.Result.FORGIVEN) <= 2 and results.count(Attempt.Result.FAILED) >= 1, results


@pytest.mark.slow
def test_a_pool_that_reboots_after_every_taskset_reboots_between_each_two(scripted):
    scripted.settings = {"duration_ms": 0, "reboot_every_taskset": True}
    scripted.save()
    ScriptedSession.reboots.clear()
    job = submit_job(variants_file(5), target=scripted)
    run_launched()
    job.refresh_from_db()
    assert job.finished_count == 5
    machine = Machine.objects.get()
    assert ScriptedSession.reboots == [machine.pk] * 5
    assert machine.target_boots == 1 + 5
