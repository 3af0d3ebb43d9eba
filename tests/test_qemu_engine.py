"""QEMU machines through the whole engine: a real machines cluster boots the
ARM test guest in a network namespace of the test's own, runs a job on two
guests, survives a killed QEMU, and leaves nothing behind after `network down`.

These are the engine-level acceptance tests of issue 5. The session alone is
tested in test_qemu.py; here the reconciler launches the machines, the
machines boot their guests (QEMU is the child of a cluster worker), claim
task-sets from the database and store every task-job. The machines cluster
gets the namespace through DISTRIBUTOR_NETNS in its environment; this process
gets it through settings, so that ``tick`` reaps a dead machine's tap there.

The guest runs built-in programs named after the seed task kinds
(tests/guest/README.md); the Binary rows are placeholders the Genode session
insists on sending. A missing prerequisite (root, qemu-system-arm, dnsmasq,
the guest build) fails these tests with the reason; they never skip.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from pyroute2 import IPRoute, netns

from distributor import reconciler
from distributor.status import overview
from distributor.environment import network_config
from distributor.models import Attempt, DistributorConfig, Event, Job, Machine, TaskJob, TaskSet
from distributor.queue import submit_job
from sessions import qemu_network as network
from tests.cluster import Cluster, kill_machines_and_stop, wait_until
from tests.test_qemu import build_guest, require_prerequisites

pytestmark = [pytest.mark.qemu, pytest.mark.network, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROGRAMS = ("hey", "cond_42", "idle", "cond_mod")
NO_MARKER = "no guest ever prints this line"
_namespaces = itertools.count()

# 12 × 2 = 24 variants. cond_42 with arg1 42 computes until its period end
# kills it (EXIT_PERIOD); with 7 it ends at once. Every other job ends on its
# own well inside its period, so a variant is schedulable exactly when its
# cond_42 is not 42. The margins are wide on purpose: under TCG the guest
# clock follows the host's, and on a busy two-core host (load 10) a 20 ms
# sleep took up to 150 ms from its start and 3 ms of CPU up to 300 ms.
JOB = {"name": "qemu-engine", "tasksets": [{"tasks": [
    {"pkg": "hey", "config": {"arg1": {"range": [1, 13]}}, "period": 1000, "numberofjobs": 2, "priority": 0},
    {"pkg": "cond_42", "config": {"arg1": [42, 7]}, "period": 600, "numberofjobs": 2, "priority": 127},
    {"pkg": "idle", "config": {"arg1": 20}, "period": 1000, "offset": 50, "numberofjobs": 1, "priority": 5},
    {"pkg": "cond_mod", "config": {"arg1": 103}, "period": 0, "numberofjobs": 2, "priority": 20},
]}]}

# One task-set of about 3 s: long enough to kill its QEMU in the middle.
LONG_JOB = {"name": "qemu-kill", "tasksets": [{"tasks": [
    {"pkg": "hey", "config": {"arg1": 1}, "period": 1000, "numberofjobs": 3, "priority": 0},
    {"pkg": "cond_42", "config": {"arg1": 42}, "period": 1500, "numberofjobs": 2, "priority": 127},
]}]}


def expected_exit(pkg: str, arg1: int) -> str:
    """What the guest's program does with its argument (tests/guest/tasks/)."""
    return "EXIT_PERIOD" if (pkg, arg1) == ("cond_42", 42) else "EXIT"


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guest() -> dict[str, str]:
    require_prerequisites()
    return build_guest()


@pytest.fixture
def pool_netns(settings):
    """A namespace of this test's own with the bridge and dnsmasq up
    (`network up`); torn down afterwards whatever happened."""
    require_prerequisites()
    name = f"dqeng{os.getpid()}x{next(_namespaces)}"
    if name in netns.listnetns():
        netns.remove(name)
    netns.create(name)
    settings.DISTRIBUTOR_NETNS = name
    settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True  # the guest boots from its build folder
    try:
        out = StringIO()
        call_command("network", "up", stdout=out)
        assert f"in namespace {name}" in out.getvalue()
        assert network.dnsmasq_running(network_config())
        yield name
    finally:
        network.down(network_config(name))
        # Only a bug leaves a process in the namespace (the tests say so);
        # they are ours, and must not outlive the test run.
        for pid in namespace_pids(name):
            os.kill(pid, signal.SIGKILL)
        netns.remove(name)


@pytest.fixture
def configured(db):
    """Timeouts for guests on a busy two-core host: two guests booting at
    once take longer than one's ~6 s, and a heartbeat thread may wait for
    the CPU a while; a task-set here never goes silent for more than 1 s."""
    config = DistributorConfig.get()
    config.heartbeat_timeout_s = 20
    config.launch_timeout_s = 60
    config.idle_timeout_s = 30
    config.target_timeout_s = 20
    config.save()
    return config


@pytest.fixture
def qemu_cluster(pool_netns, configured):
    cluster = Cluster.machines(workers=3, extra_env={"DISTRIBUTOR_NETNS": pool_netns, "DISTRIBUTOR_QEMU_HOST_IMAGES": "1"})
    cluster.log_start = cluster.log_path.stat().st_size if cluster.log_path.exists() else 0  # it is appended to
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        kill_machines_and_stop(cluster, timeout=30)


@pytest.fixture
def binaries(db, tmp_path):
    """`binary add` for every program the jobs use (placeholders: the guest
    runs its built-in program of that name)."""
    for name in PROGRAMS:
        path = tmp_path / name
        path.write_bytes(f"placeholder for {name}\n".encode())
        call_command("binary", "add", str(path), "--name", name, stdout=StringIO())


def add_qemu_target(guest: dict, tag: str, *extra: str):
    """`target add` of a qemu pool booting the test guest. The name is unique
    per run: consoles and machine logs are named after it and appended."""
    from distributor.models import Target

    name = f"qemu-{os.getpid()}-{tag}"
    call_command("target", "add", name, "--kind", "qemu", "--set", f"kernel={guest['KERNEL']}",
                 "--set", f"initrd={guest['INITRD']}", *extra, stdout=StringIO())
    return Target.objects.get(name=name)


# -- helpers ------------------------------------------------------------------------


def wait_for(condition, timeout: float, message: str, cluster: Cluster | None = None) -> float:
    """wait_until, and on time-out the machines' rows and logs in the message."""
    try:
        return wait_until(condition, timeout, message=message)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnosis(cluster)}") from None


def diagnosis(cluster: Cluster | None) -> str:
    lines = [f"status: {json.dumps(overview(), default=str)}"]
    for machine in Machine.objects.select_related("target").order_by("pk"):
        lines.append(f"machine {machine.pk} slot {machine.slot} {machine.state} boots {machine.target_boots} "
                     f"done {machine.tasksets_done} activity {machine.activity!r} error {machine.last_error[-500:]!r}")
        log = Path(django_settings.LOG_DIR) / "machines" / f"{machine.target.name}-{machine.slot}.log"
        if log.exists():
            lines += ["  " + line for line in log.read_text(errors="replace").splitlines()[-10:]]
    if cluster is not None and cluster.log_path.exists():
        with open(cluster.log_path, "rb") as log:
            log.seek(getattr(cluster, "log_start", 0))
            lines += ["cluster log:"] + log.read().decode(errors="replace").splitlines()[-20:]
    return "\n".join(lines)


def live_count() -> int:
    return Machine.objects.filter(state__in=Machine.LIVE_STATES).count()


def job_done(job: Job) -> bool:
    return not Job.objects.get(pk=job.pk).is_active


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (as `ip netns pids`)."""
    wanted = os.stat(f"/run/netns/{name}").st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == wanted and network.process_name(int(entry)):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def qemu_children(worker_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(worker_pid), "-x", "qemu-system-arm"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def qemu_pids_in_log(target_name: str, slot: int) -> list[int]:
    log = Path(django_settings.LOG_DIR) / "machines" / f"{target_name}-{slot}.log"
    return [int(pid) for pid in re.findall(r"QEMU pid (\d+) started", log.read_text())]


def console(target_name: str, slot: int) -> str:
    return (Path(django_settings.DATA_DIR) / "consoles" / f"{target_name}-{slot}.log").read_text(errors="replace")


def links(name: str) -> list[str]:
    with IPRoute(netns=name) as ipr:
        return sorted(link.get("ifname") for link in ipr.get_links())


def assert_taskjobs_match_the_programs(taskset: TaskSet) -> None:
    tasks = list(taskset.tasks.all())
    assert tasks, taskset
    for task in tasks:
        jobs = list(TaskJob.objects.filter(task=task).order_by("job_number"))
        assert [job.exit_type for job in jobs] == [expected_exit(task.pkg, task.arg1)] * task.numberofjobs, (
            f"variant {taskset.variant} task {task}: (release, start, end, exit) "
            f"{[(j.release_ms, j.start_ms, j.end_ms, j.exit_type) for j in jobs]}")
        for job in jobs:
            assert job.start_ms <= job.end_ms
            if task.period:
                assert job.release_ms == task.offset + job.job_number * task.period
                assert job.start_ms >= job.release_ms
                if job.exit_type == "EXIT_PERIOD":  # killed at its period end, not before
                    assert job.end_ms >= job.release_ms + task.period
                else:
                    assert job.end_ms < job.release_ms + task.period


def stop_machines_and_take_the_network_down(name: str, workers: list[int], qemu_pids: list[int]) -> None:
    """Machines take their guests and taps with them; `network down` then
    removes the bridge and dnsmasq, and nothing of ours runs any more."""
    reconciler.kill_all()
    wait_until(lambda: live_count() == 0, 30, message="the machines stop")
    assert network.list_taps(network_config()) == {}, "a stopped machine left its tap"
    for worker in workers:
        assert qemu_children(worker) == [], f"worker {worker} still has a QEMU"
    dnsmasq = int(network_config().dnsmasq_pid_file.read_text())
    assert network.process_name(dnsmasq) == "dnsmasq"
    assert set(namespace_pids(name)) == {dnsmasq}, "only dnsmasq runs in the namespace once the machines stopped"

    out = StringIO()
    call_command("network", "down", stdout=out)
    assert out.getvalue().strip() == f"removed in namespace {name}: dnsmasq, br0"
    assert links(name) == ["lo"]
    ip_link = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "tap" not in ip_link and "br0" not in ip_link
    assert namespace_pids(name) == []
    for pid in [dnsmasq, *qemu_pids]:
        assert network.process_name(pid) is None, f"process {pid} outlived `network down`"
    leftover = subprocess.run(["pgrep", "-f", f"network/{name}-"], capture_output=True, text=True).stdout
    assert leftover == "", f"a dnsmasq of this namespace is left: {leftover}"


# -- the acceptance tests ---------------------------------------------------------------


def test_a_job_of_24_tasksets_on_two_qemu_machines_stores_the_exit_types_the_programs_caused(
        guest, qemu_cluster, pool_netns, binaries):
    target = add_qemu_target(guest, "pair")
    reconciler.set_max_machines(2)
    job = submit_job(json.dumps(JOB), target=target)
    assert job.total == 24
    wait_for(lambda: job_done(job), 300, "the job of 24 task-sets ends", qemu_cluster)

    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 24, 0)
    tasksets = list(job.tasksets.order_by("variant"))
    assert [t.variant for t in tasksets] == list(range(24))
    for taskset in tasksets:
        assert (taskset.state, taskset.attempts) == (TaskSet.State.FINISHED, 1), taskset.last_error
        assert_taskjobs_match_the_programs(taskset)
        cond_42 = taskset.tasks.get(pkg="cond_42")
        schedulable = cond_42.arg1 != 42
        assert taskset.outcome == (TaskSet.Outcome.SCHEDULABLE if schedulable else TaskSet.Outcome.UNSCHEDULABLE)
    assert {t.tasks.get(pkg="cond_42").arg1 for t in tasksets} == {42, 7}
    assert set(Attempt.objects.filter(taskset__job=job).values_list("result", flat=True)) == {Attempt.Result.FINISHED}

    # Two guests, each booted once, shared the work.
    machines = list(Machine.objects.filter(target=target).order_by("slot"))
    assert [m.slot for m in machines] == [0, 1]
    assert [m.target_boots for m in machines] == [1, 1], [m.last_error for m in machines]
    assert all(m.tasksets_done > 0 for m in machines), [m.tasksets_done for m in machines]
    assert sum(m.tasksets_done for m in machines) == 24
    for machine in machines:
        text = console(target.name, machine.slot)
        assert f"===== boot 1 of machine {machine.pk} slot {machine.slot}" in text
        assert f"distributor-guest: address 10.200.45.{machine.slot + 1}" in text  # DHCP by the slot's MAC
        assert "distributor-agent: ready" in text
    qemu_pids = [pid for m in machines for pid in qemu_pids_in_log(target.name, m.slot)]
    assert len(qemu_pids) == 2
    for machine in machines:
        assert qemu_children(machine.pid) == qemu_pids_in_log(target.name, machine.slot)

    stop_machines_and_take_the_network_down(pool_netns, [m.pid for m in machines], qemu_pids)


def test_a_killed_qemu_fails_its_attempt_and_the_taskset_finishes_on_a_freshly_booted_guest(
        guest, qemu_cluster, pool_netns, binaries):
    target = add_qemu_target(guest, "kill")
    reconciler.set_max_machines(1)  # the retry cannot go to another, older guest
    job = submit_job(json.dumps(LONG_JOB), target=target)
    wait_for(lambda: Event.objects.filter(taskset__job=job, attempt=1, type="START").exists(), 120,
             "the task-set runs on a booted guest", qemu_cluster)

    machine = Machine.objects.get(target=target)
    assert (machine.state, machine.target_boots) == (Machine.State.BUSY, 1)
    # The QEMU of the machine: a child of its cluster worker, as its log says.
    [qemu] = qemu_children(machine.pid)
    assert qemu_pids_in_log(target.name, machine.slot) == [qemu]
    assert machine.pid in qemu_cluster.pids()
    os.kill(qemu, signal.SIGKILL)
    wait_for(lambda: job_done(job), 120, "the task-set is retried and finishes", qemu_cluster)

    taskset = job.tasksets.get()
    assert (taskset.state, taskset.attempts) == (TaskSet.State.FINISHED, 2), taskset.last_error
    first, second = Attempt.objects.filter(taskset=taskset).order_by("number")
    assert (first.number, first.result) == (1, Attempt.Result.FAILED)
    assert f"QEMU (pid {qemu}) was killed by signal 9" in first.error
    assert (second.number, second.result, second.error) == (2, Attempt.Result.FINISHED, "")
    assert second.started_at >= first.ended_at
    # The failed attempt's events stay as evidence; the results are the retry's.
    assert Event.objects.filter(taskset=taskset, attempt=1, type="START").exists()
    assert_taskjobs_match_the_programs(taskset)
    assert taskset.outcome == TaskSet.Outcome.UNSCHEDULABLE

    # Retried on the same machine after a fresh boot of its guest.
    machine.refresh_from_db()
    assert second.machine_id == machine.pk
    assert machine.target_boots == 2
    assert f"QEMU (pid {qemu}) was killed by signal 9" in machine.last_error
    assert network.process_name(qemu) is None
    relaunched = qemu_pids_in_log(target.name, machine.slot)
    assert relaunched[0] == qemu and len(relaunched) == 2
    assert qemu_children(machine.pid) == [relaunched[1]]
    text = console(target.name, machine.slot)
    assert f"===== boot 2 of machine {machine.pk}" in text
    assert text.count("distributor-agent: ready") == 2

    stop_machines_and_take_the_network_down(pool_netns, [machine.pid], relaunched)


def test_a_guest_that_never_prints_its_marker_fails_its_start_naming_the_timeout_and_is_booted_again(
        guest, qemu_cluster, pool_netns, binaries):
    target = add_qemu_target(guest, "mute", "--set", f"boot_marker={NO_MARKER}", "--set", "startup_timeout=4")
    reconciler.set_max_machines(1)
    job = submit_job(json.dumps(LONG_JOB), target=target)
    failure = f"guest printed no boot marker /{NO_MARKER}/ within 4 s (settings.startup_timeout)"

    def retrying() -> bool:
        machine = Machine.objects.filter(target=target).first()
        return bool(machine and machine.state == Machine.State.STARTING
                    and machine.activity == "starting target (try 2)"
                    and machine.last_error.startswith(f"target start failed: {failure}"))

    wait_for(retrying, 60, "the first boot fails with the timeout and the machine boots again", qemu_cluster)
    wait_for(lambda: not Machine.objects.get(target=target).is_live, 60, "the machine gives up", qemu_cluster)
    machine = Machine.objects.get(target=target)
    assert machine.state == Machine.State.FAILED
    assert machine.last_error.startswith(f"target did not start after 3 tries: {failure}")
    assert machine.target_boots == 0
    # Every try started a QEMU of its own and waited out the whole timeout.
    text = console(target.name, machine.slot)
    assert [int(n) for n in re.findall(rf"===== boot (\d+) of machine {machine.pk} ", text)] == [1, 2, 3]
    assert (machine.stopped_at - machine.started_at).total_seconds() >= 3 * 4
    assert len(qemu_pids_in_log(target.name, machine.slot)) == 3
    # No task-set was taken by a machine whose target never came up.
    assert not job.tasksets.exists()
    job.cancel()

    stop_machines_and_take_the_network_down(pool_netns, [machine.pid], qemu_pids_in_log(target.name, machine.slot))


def test_a_guest_boots_again_with_the_initrd_each_job_named_when_the_image_is_replaced_between_them(
        guest, qemu_cluster, pool_netns, binaries, tmp_path):
    """Issue 18: a job runs the boot images it named when it was submitted.
    The initrd is uploaded, the first job submitted, the initrd uploaded
    again (NUL padding: the kernel skips it, the checksum changes), the second
    job submitted; one machine runs both, rebooting for each job's image."""
    from distributor.models import BootImage, Target

    def upload(name: str, path: str) -> str:
        call_command("image", "add", path, "--name", name, stdout=StringIO())
        return BootImage.objects.get(name=name).sha256

    upload("guest-kernel", guest["KERNEL"])
    first_initrd = upload("guest-initrd", guest["INITRD"])
    padded = tmp_path / "initrd-padded"
    padded.write_bytes(Path(guest["INITRD"]).read_bytes() + b"\0" * 512)
    target = Target.objects.create(name=f"qemu-{os.getpid()}-images", kind="qemu",
                                   settings={"kernel": "guest-kernel", "initrd": "guest-initrd"})
    small = {"tasksets": [{"tasks": [{"pkg": "hey", "config": {"arg1": [1, 2]}, "period": 500, "numberofjobs": 1}]}]}
    reconciler.set_max_machines(1)
    reconciler.shut_down_all()  # no machine boots before both jobs are in
    first = submit_job(json.dumps({**small, "name": "first"}), target=target)
    second_initrd = upload("guest-initrd", str(padded))
    second = submit_job(json.dumps({**small, "name": "second"}), target=target)
    assert first_initrd != second_initrd
    assert not Machine.objects.filter(target=target).exists()
    reconciler.resume()
    wait_for(lambda: job_done(first) and job_done(second), 240, "both jobs end", qemu_cluster)

    for job, initrd in ((first, first_initrd), (second, second_initrd)):
        job.refresh_from_db()
        assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 2, 0)
        assert set(job.tasksets.values_list("attempts", flat=True)) == {1}, "a set put back for a reboot used no try"
        assert job.contents.get(kind="image", name="guest-initrd").sha256 == initrd
    machine = Machine.objects.get(target=target)
    booted = re.findall(r"===== boot \d+ of machine .*-initrd \S*/cache/([0-9a-f]{64})", console(target.name, 0))
    # The first boot takes the current upload; the first job's task-set sends
    # the guest back for its own initrd, the second job's for the new one.
    assert booted == [second_initrd, first_initrd, second_initrd], [sha[:12] for sha in booted]
    assert machine.target_boots == 3
    stop_machines_and_take_the_network_down(pool_netns, [machine.pid], qemu_pids_in_log(target.name, 0))
