"""A host's own fault is the host's, not the task-set's (issue 18, point 2).

A failure before the target is contacted (an uploaded file this host cannot
cache, no QEMU binary, no bridge or DHCP) puts the task-set back untouched,
marks the host unable to run that target with the cause, and the reconciler
places that target's machines on other hosts only; the operator sees it in
``distributor status`` and on the dashboard, and drains, resumes or forgets
a host with ``distributor host NAME drain|resume|forget``.
"""
from __future__ import annotations

import io
import json
import logging
import sys
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from distributor import reconciler
from distributor.hosts import beat
from distributor.models import Attempt, AuditEntry, Binary, Host, HostTargetFault, Job, Machine, Slot, Target, TaskSet
from distributor.queue import submit_job
from distributor.status import overview
from sessions import HostFault, SessionInfo
from tests.inprocess import run_launched, variants_file
from tests.peer import TaskLoaderPeer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]
HEY = b"\x7fELF hey, the one binary"


def distributor(*args: str) -> str:
    out = io.StringIO()
    call_command("distributor", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path  # this host's cache: DATA_DIR/cache
    return tmp_path


def test_a_binary_this_host_cannot_cache_costs_no_try_and_keeps_the_target_off_the_host(data_dir):
    sha256 = Binary.store("hey", ContentFile(HEY))[0].sha256
    (data_dir / "cache" / sha256 / "in-the-way").mkdir(parents=True)  # the copy cannot be written here
    with TaskLoaderPeer("127.0.0.9", slow_start_seconds=0.1) as peer:
        target = Target.objects.create(name="lab", kind="genode", addresses=[peer.address])
        job = submit_job(variants_file(3), target=target, tries=1)
        run_launched()

        host = settings.DISTRIBUTOR_HOST
        assert TaskSet.objects.filter(job=job).count() > 0
        assert set(TaskSet.objects.filter(job=job).values_list("state", "attempts", "runs")) == {
            (TaskSet.State.QUEUED, 0, 0)}, "back in the queue untouched: no try used"
        assert not Attempt.objects.exists()
        fault = HostTargetFault.objects.get()
        assert (fault.host, fault.target_id) == (host, target.pk)
        assert "binary 'hey': cannot keep a copy in" in fault.cause
        machine = Machine.objects.get()
        assert machine.state == Machine.State.FAILED and "this host cannot run the target" in machine.last_error
        assert reconciler.tick()["launched"] == [], "no machine of that target on the faulty host"
        assert peer.received_binaries() == [], "the target was never contacted"

        # The operator sees it, fixes the cause and resumes the host.
        status = {h["name"]: h for h in overview()["hosts"]}[host]
        assert status["health"] == "faulty" and status["faults"][0]["target"] == "lab"
        text = distributor("status")
        assert f"host {host}: faulty" in text and "cannot run target lab: binary 'hey'" in text
        (data_dir / "cache" / sha256 / "in-the-way").rmdir()
        (data_dir / "cache" / sha256).rmdir()
        assert "(1 fault(s) lifted)" in distributor("host", host, "resume")
        run_launched()

    job.refresh_from_db()
    assert job.state == Job.State.FINISHED and job.bad_count == 0 and job.finished_count == job.total == 3
    assert set(TaskSet.objects.filter(job=job).values_list("runs", flat=True)) == {1}
    assert peer.boots[-1].binaries["hey"] == HEY
    assert (data_dir / "cache" / sha256).read_bytes() == HEY


def test_a_faulty_host_is_tried_again_and_a_task_set_it_finishes_lifts_the_fault(data_dir):
    """No operator: once the pool's health_check_every has passed one machine
    tries the host again; meeting the fault again doubles the wait (no try
    used); once the cause is mended the probe runs the job and lifts the fault."""
    sha256 = Binary.store("hey", ContentFile(HEY))[0].sha256
    in_the_way = data_dir / "cache" / sha256 / "in-the-way"
    in_the_way.mkdir(parents=True)
    host = settings.DISTRIBUTOR_HOST
    with TaskLoaderPeer("127.0.0.9", slow_start_seconds=0.1) as peer:
        target = Target.objects.create(name="lab", kind="genode", addresses=[peer.address],
                                       settings={"health_check_every": 1})
        reconciler.set_max_machines(4)
        job = submit_job(variants_file(3), target=target, tries=1)
        run_launched()
        fault = HostTargetFault.objects.get()
        assert fault.faults_in_a_row == 1 and 0.9 <= (fault.retry_at - fault.seen_at).total_seconds() <= 1.1
        assert reconciler.tick()["launched"] == [], "not before its retry time"

        HostTargetFault.objects.update(retry_at=timezone.now())  # its time has come; the cause is still there
        assert len(reconciler.tick()["launched"]) == 1, "one probe, not a machine per queued task-set"
        assert reconciler.tick()["launched"] == [], "and no second probe while it runs"
        run_launched()
        fault = HostTargetFault.objects.get()
        assert fault.faults_in_a_row == 2 and 1.9 <= (fault.retry_at - fault.seen_at).total_seconds() <= 2.1
        assert set(TaskSet.objects.filter(job=job).values_list("state", "attempts")) == {(TaskSet.State.QUEUED, 0)}
        assert "tried again at" in distributor("status")

        in_the_way.rmdir()  # the operator clears the way, and says nothing to the distributor
        in_the_way.parent.rmdir()
        HostTargetFault.objects.update(retry_at=timezone.now())
        reconciler.tick()
        run_launched()

    job.refresh_from_db()
    assert job.state == Job.State.FINISHED and job.finished_count == job.total == 3 and job.bad_count == 0
    assert not HostTargetFault.objects.exists(), "the probe's finished task-set lifted the fault"
    assert {h["name"]: h["health"] for h in overview()["hosts"]}[host] == "ok"
    assert peer.boots[-1].binaries["hey"] == HEY


def test_a_machine_its_kind_cannot_set_up_on_this_host_fails_with_a_host_fault(scripted):
    """Before the target is even started: the kind's configuration on this
    host (a tap or an address it cannot compute) fails the machine with its
    cause, marks the host, closes the machine's log, and no machine follows."""
    host = settings.DISTRIBUTOR_HOST
    scripted.settings = {"duration_ms": 0, "unusable_on": host}
    scripted.save()
    job = submit_job(variants_file(3), target=scripted)
    run_launched()
    machine = Machine.objects.get()
    assert machine.state == Machine.State.FAILED
    assert machine.last_error == f"this host cannot run the target: scripted: cannot be set up on host {host}"
    assert HostTargetFault.objects.get().cause == f"scripted: cannot be set up on host {host}"
    assert logging.getLogger(f"distributor.machine.{machine.pk}").handlers == [], "its log file is closed"
    assert reconciler.tick()["launched"] == [], "not placed here again at once"
    assert set(job.tasksets.values_list("attempts", flat=True)) <= {0}


def test_other_hosts_take_the_targets_machines_and_other_targets_stay(scripted):
    Host.objects.all().delete()
    beat(capacity=4, name="alpha")
    beat(capacity=4, name="beta")
    other = Target.objects.create(name="other", kind="scripted")
    HostTargetFault.record("beta", scripted, "settings.qemu: 'qemu-system-arm' is not installed")
    reconciler.set_max_machines(8)
    submit_job(variants_file(20), target=scripted)
    submit_job(variants_file(20), target=other)
    placed = set(Machine.objects.values_list("target__name", "host"))
    assert placed == {("scripted", "alpha"), ("other", "beta")}, "alpha full with scripted, beta takes only other"
    assert Machine.objects.filter(target=scripted).count() == 4


def test_drain_resume_and_forget_a_host(scripted):
    Host.objects.all().delete()
    beat(capacity=2, name="alpha")
    beat(capacity=2, name="beta")
    reconciler.set_max_machines(4)
    submit_job(variants_file(20), target=scripted)
    assert Machine.objects.filter(host="beta").count() == 2
    Machine.objects.filter(host="beta").update(state=Machine.State.IDLE)  # picked up by beta's workers

    assert "host beta drained" in distributor("host", "beta", "drain")
    assert set(Machine.objects.filter(host="beta").values_list("stop_mode", flat=True)) == {Machine.StopMode.DRAIN}
    Machine.objects.filter(host="beta").update(state=Machine.State.STOPPED)
    reconciler.tick()
    assert not Machine.objects.filter(host="beta", state__in=Machine.LIVE_STATES).exists()
    assert {h["name"]: h["health"] for h in overview()["hosts"]} == {"alpha": "ok", "beta": "drained"}

    assert "host beta resumed" in distributor("host", "beta", "resume")
    reconciler.tick()
    assert Machine.objects.filter(host="beta", state=Machine.State.LAUNCHING).exists()

    with pytest.raises(CommandError, match="host: beta is alive .* stop it before forgetting it"):
        distributor("host", "beta", "forget")
    with pytest.raises(CommandError, match=r"host: no host named 'gamma' \(known: alpha, beta\)"):
        distributor("host", "gamma", "drain")
    HostTargetFault.record("beta", scripted, "no bridge")
    Host.objects.filter(name="beta").update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert "host beta forgotten" in distributor("host", "beta", "forget")
    assert list(Host.objects.values_list("name", flat=True)) == ["alpha"] and not HostTargetFault.objects.exists()
    assert json.loads(distributor("status", "--json"))["hosts"][0]["heartbeat_age_s"] < 5
    trail = [(e.action, e.subject) for e in AuditEntry.objects.order_by("at", "id")]
    assert trail[-3:] == [("host-drain", "beta"), ("host-resume", "beta"), ("host-forget", "beta")]
    assert AuditEntry.objects.get(action="host-drain").actor.startswith("cli:")


def test_the_dashboard_shows_each_hosts_health_capacity_machines_and_heartbeat(client, staff, scripted):
    Host.objects.all().delete()
    beat(capacity=3, name="alpha")
    HostTargetFault.record("alpha", scripted, "no DHCP server for bridge 'br0' on this host")
    client.force_login(staff)
    page = client.get("/dashboard/live").content.decode()
    row = page[page.index('data-host="alpha"'):]
    row = row[:row.index("</tr>")]
    assert "faulty" in row and "0 / 3" in row and "s ago" in row and "no DHCP server for bridge" in row


def test_the_api_status_lists_each_hosts_health(client, alice, scripted):
    from webapp.models import ApiToken

    Host.objects.all().delete()
    beat(capacity=3, name="alpha")
    HostTargetFault.record("alpha", scripted, "no bridge 'br0'")
    token = ApiToken.issue(alice, "script")[1]
    hosts = client.get("/api/status", headers={"Authorization": f"Bearer {token}"}).json()["hosts"]
    assert [(h["name"], h["health"], h["capacity"], h["machines"]) for h in hosts] == [("alpha", "faulty", 3, 0)]
    fault = hosts[0]["faults"][0]
    assert 55 <= (datetime.fromisoformat(fault["retry_at"]) - datetime.fromisoformat(fault["seen_at"])).total_seconds() <= 65
    assert fault | {"seen_at": None, "retry_at": None} == {"target": "scripted", "cause": "no bridge 'br0'", "seen_at": None,
                                                          "faults_in_a_row": 1, "retry_at": None}


def test_a_missing_qemu_binary_is_a_host_fault(db, settings):
    from distributor.environment import host_environment
    from sessions.qemu import QemuSession

    settings.DISTRIBUTOR_NETNS = ""
    info = SessionInfo(machine_id=1, slot=0, address="", log=logging.getLogger("t"), host=host_environment(),
                       settings={"kernel": "image.elf", "qemu": "qemu-system-nowhere", "tap": False})
    with pytest.raises(HostFault, match="settings.qemu: 'qemu-system-nowhere' is not installed on host"):
        QemuSession(info).start_host()


def _host_fault_not_slot_fault(target, job, cause: str) -> None:
    """The host is marked with ``cause``; no slot is blamed and no try is used."""
    fault = HostTargetFault.objects.get()
    assert (fault.host, fault.target_id) == (settings.DISTRIBUTOR_HOST, target.pk)
    assert cause in fault.cause
    assert not Slot.objects.exclude(health=Slot.Health.HEALTHY).exists(), "no slot is suspect or quarantined"
    assert not Slot.objects.filter(failures_in_a_row__gt=0).exists()
    assert not Attempt.objects.exists(), "no task-set was tried"
    assert set(TaskSet.objects.filter(job=job).values_list("state", "attempts")) <= {(TaskSet.State.QUEUED, 0)}
    machine = Machine.objects.get()  # one met the fault; none other placed on this host
    assert machine.state == Machine.State.FAILED and cause in machine.last_error
    assert machine.last_error.startswith("this host cannot run the target")


@pytest.mark.parametrize("pool", ["board without its power tool", "genode without ping"])
def test_a_tool_the_host_lacks_marks_the_host_not_the_slots(data_dir, monkeypatch, pool):
    """A new host without the PoE tool or ``ping``: every slot of the pool
    would fail alike, so the host is faulty and the task-sets wait for
    another host (or the probe after health_check_every)."""
    monkeypatch.setattr("sessions.genode.PING_ARGV", ("/nonexistent/ping", "-c", "1"))
    Binary.store("hey", ContentFile(HEY))
    with TaskLoaderPeer("127.0.0.9") as peer:
        if pool.startswith("board"):
            target = Target.objects.create(name="lab", kind="board", addresses=[peer.address],
                                           settings={"power_on": "/nonexistent/poe on {slot}",
                                                     "power_off": "/nonexistent/poe off {slot}"})
            cause = "settings.power_off: command '/nonexistent/poe' is not installed on host"
        else:
            target = Target.objects.create(name="lab", kind="genode", addresses=[peer.address],
                                           settings={"ping": True})
            cause = "settings.ping is on but the command '/nonexistent/ping' is not installed on this host"
        job = submit_job(variants_file(3), target=target, tries=3)
        run_launched()
        assert peer.connections == 0, "the target was never contacted"

    _host_fault_not_slot_fault(target, job, cause)


def test_a_boot_image_nobody_uploaded_marks_the_host_not_the_slots(data_dir):
    """The pool names a kernel that was never uploaded (or was removed): no
    guest boots, and no slot is to blame; the cause names the setting."""
    Binary.store("hey", ContentFile(HEY))
    target = Target.objects.create(name="vm", kind="qemu",
                                   settings={"kernel": "never-uploaded.elf", "qemu": "true", "tap": False})
    job = submit_job(variants_file(3), target=target, tries=3)
    run_launched()

    _host_fault_not_slot_fault(target, job, "settings.kernel: 'never-uploaded.elf' is neither an uploaded boot image")


def test_a_host_fault_met_by_a_reboot_between_task_sets_marks_the_host(data_dir, tmp_path):
    """The PoE tool goes missing while the pool runs (removed by an upgrade):
    the reboot after a task-set meets it. The host is marked there and then,
    so no second machine is placed on it to meet the fault again."""
    Binary.store("hey", ContentFile(HEY))
    tool = tmp_path / "poe"
    tool.write_text(f"#!{sys.executable}\nimport os, sys\nif sys.argv[1] == 'on':\n    os.remove(sys.argv[0])\n")
    tool.chmod(0o755)
    with TaskLoaderPeer("127.0.0.9") as peer:
        target = Target.objects.create(name="lab", kind="board", addresses=[peer.address],
                                       settings={"power_on": f"{tool} on", "power_off": f"{tool} off",
                                                 "reboot_every_taskset": True})
        job = submit_job(variants_file(3), target=target, tries=3)
        run_launched()
        assert len(peer.tasksets) == 1

    fault = HostTargetFault.objects.get()
    assert f"settings.power_off: command '{tool}' is not installed" in fault.cause
    machine = Machine.objects.get()  # the one that met it; no other was placed on this host
    assert machine.state == Machine.State.FAILED and machine.last_error.startswith("this host cannot run the target")
    assert not Slot.objects.exclude(health=Slot.Health.HEALTHY).exists()
    job.refresh_from_db()
    assert job.finished_count == 1 and job.bad_count == 0
    assert not Attempt.objects.filter(result=Attempt.Result.FAILED).exists()
