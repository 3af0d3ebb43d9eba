"""QEMU machines for real: the ARM test guest boots in a namespace of its own,
gets its address by DHCP over its tap, runs task-sets through the session,
and is noticed and booted again when its QEMU dies.

The guest is built by tests/guest/build.sh (cached); a missing prerequisite
fails these tests with the reason, never skips them.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.test import override_settings
from pyroute2 import netns

from distributor.environment import host_environment, network_config
from distributor.files import UploadedFiles
from sessions import qemu_network as network
from sessions import EventTracker, HostFault, SessionInfo, TargetFailure

GUEST_DIR = Path(__file__).parent / "guest"
TASK_PROGRAMS = ("hey", "pi", "cond_42", "cond_mod", "linpack", "tumatmul", "namaste", "idle")


def build_guest() -> dict[str, str]:
    """Build (or find in the cache) the test guest; its paths from guest.env."""
    result = subprocess.run(["bash", str(GUEST_DIR / "build.sh")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"tests/guest/build.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in values.items()}


def require_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("QEMU tests create a network namespace, a bridge and taps: they need root")
    if shutil.which("qemu-system-arm") is None:
        pytest.fail("qemu-system-arm is not installed: apt-get install --no-install-recommends qemu-system-arm "
                    "(tests/guest/APT_PACKAGES.txt)")
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is not installed: apt-get install dnsmasq-base (tests/guest/APT_PACKAGES.txt)")


@pytest.fixture(scope="module")
def guest() -> dict[str, str]:
    require_prerequisites()
    return build_guest()


@pytest.fixture(scope="module")
def pool_network(tmp_path_factory):
    """A namespace with the bridge and dnsmasq up; everything gone afterwards."""
    require_prerequisites()
    name = f"dqqemu{os.getpid()}"
    if name in netns.listnetns():
        netns.remove(name)
    netns.create(name)
    data_dir = tmp_path_factory.mktemp("qemu-data")
    # The guest is booted from its build folder: host paths allowed, as a site may.
    override = override_settings(DISTRIBUTOR_NETNS=name, DISTRIBUTOR_CAP=8, DATA_DIR=data_dir,
                                 DISTRIBUTOR_QEMU_HOST_IMAGES=True)
    override.enable()
    cfg = network.up(network_config())
    try:
        yield cfg
    finally:
        network.down(cfg)
        override.disable()
        netns.remove(name)


def make_session(guest: dict, slot: int, tmp_path: Path, **settings):
    from sessions.qemu import QemuSession

    info = SessionInfo(machine_id=100 + slot, slot=slot, address="",
                       settings={"kernel": guest["KERNEL"], "initrd": guest["INITRD"], **settings},
                       log=logging.getLogger(f"test.qemu.{slot}"), console_path=tmp_path / f"console-{slot}.log",
                       target_timeout=30.0, files=UploadedFiles(), host=host_environment())
    return QemuSession(info)


@pytest.fixture(scope="module")
def machine(guest, pool_network, tmp_path_factory):
    """Slot 0's session, shared by the tests of this module (a boot costs ~6 s);
    each test boots it again if an earlier one killed it."""
    session = make_session(guest, 0, tmp_path_factory.mktemp("consoles"))
    yield session
    session.stop_host()


def ready(session):
    if not session.qemu_alive():
        session.start_host()
    return session


@pytest.fixture
def binaries(db):
    """The Genode session sends the binaries it has rows for; the guest
    stores them and runs its own built-in programs of the same names."""
    from distributor.models import Binary

    for name in TASK_PROGRAMS:
        data = f"placeholder for {name}".encode()
        Binary.store(name, ContentFile(data))


def task(task_id: int, pkg: str, **fields) -> dict:
    base = {"id": task_id, "pkg": pkg, "arg1": 0, "priority": 10, "deadline": 0, "period": 0, "offset": 0,
            "numberofjobs": 1, "criticaltime": 0, "quota": "100M", "caps": 235, "cores": 1, "coreoffset": 0}
    return {**base, **fields}


def run_taskset(session, tasks: list[dict], timeout: float = 60.0) -> EventTracker:
    session.start(tasks)
    tracker = EventTracker(tasks)
    deadline = time.monotonic() + timeout
    while not tracker.finished:
        assert time.monotonic() < deadline, f"task-set not finished after {timeout} s: {tracker.jobs}"
        tracker.feed(session.run(1.0))
    session.stop()
    return tracker


def unit_session(tmp_path: Path, slot: int = 0, **settings):
    return make_session({"KERNEL": "/boot/vmlinuz", "INITRD": ""}, slot, tmp_path, **settings)


def test_its_qemu_command_puts_the_slot_on_its_tap_with_its_mac(tmp_path, settings):
    settings.DISTRIBUTOR_NETNS = ""
    settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True
    settings.DISTRIBUTOR_CAP = 42
    kernel = tmp_path / "image.elf"
    kernel.write_bytes(b"")
    session = unit_session(tmp_path, slot=3, kernel=str(kernel), cpus=2, extra_args=["-rtc", "base=utc"])
    argv = session.command("tap3")
    assert argv[:7] == ["qemu-system-arm", "-M", "virt,highmem=off", "-smp", "2", "-m", "256M"]
    assert ["-serial", "stdio"] == argv[argv.index("-serial"):argv.index("-serial") + 2]
    assert "tap,id=net0,ifname=tap3,script=no,downscript=no" in argv
    assert "virtio-net-device,netdev=net0,mac=0a:06:00:00:00:03" in argv
    assert argv[-2:] == ["-rtc", "base=utc"]
    assert session.info.address == "10.200.45.4:3001"


def test_a_board_nic_is_configured_with_nic_and_a_second_pool_starts_later(tmp_path, settings):
    settings.DISTRIBUTOR_NETNS = ""
    settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True
    settings.DISTRIBUTOR_CAP = 42
    kernel = tmp_path / "image.elf"
    kernel.write_bytes(b"")
    session = unit_session(tmp_path, slot=1, kernel=str(kernel), machine="realview-pbx-a9", nic="lan9118",
                           nic_onboard=True, initrd="", append="", first_slot=10)
    argv = session.command("tap11")
    assert "tap,ifname=tap11,script=no,downscript=no,model=lan9118,mac=0a:06:00:00:00:0b" in argv
    assert "-initrd" not in argv and "-append" not in argv
    assert session.info.address == "10.200.45.12:3001"


def test_qemu_pool_settings_are_checked_by_name():
    from sessions.qemu import QemuSession

    errors = QemuSession.check_settings({"boot_marker": "(", "memory": "lots", "extra_args": "-s", "cpus": 0}, [])
    assert set(errors) == {"settings.kernel", "settings.boot_marker", "settings.memory", "settings.extra_args",
                           "settings.cpus"}
    assert QemuSession.check_settings({"kernel": "image.elf"}, []) == {}


def test_an_unknown_kernel_is_a_host_fault_naming_the_setting(tmp_path, db, settings):
    """No guest can boot from an image nobody uploaded: not the slot's fault."""
    settings.DISTRIBUTOR_NETNS = ""
    session = unit_session(tmp_path, kernel="no-such-image")
    with pytest.raises(HostFault, match="settings.kernel: 'no-such-image' is neither an uploaded boot image .*: "
                                        "upload the image or correct the pool's setting"):
        session.command(None)


def test_dead_machines_taps_are_cleaned_and_live_ones_kept(monkeypatch):
    from types import SimpleNamespace

    from sessions.qemu import QemuSession

    kept = []
    monkeypatch.setattr(network, "cleanup_taps", lambda keep, cfg: kept.extend(keep) or [])
    pool = SimpleNamespace(kind="qemu", settings={"first_slot": 4})
    other = SimpleNamespace(kind="genode", settings={})
    live = [SimpleNamespace(target=pool, slot=1), SimpleNamespace(target=other, slot=0)]
    QemuSession.clean_up_host(live, host_environment())
    assert kept == [5]


def exit_types(tracker: EventTracker, task_id: int) -> list[str]:
    return [job.exit_type for job in tracker.jobs[task_id]]


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_the_guest_boots_gets_its_slot_address_and_answers_available(machine):
    ready(machine)
    assert machine.info.address == "10.200.45.1:3001"  # by DHCP, from the slot's MAC
    assert machine.boot_seconds < 60
    console = machine.info.console_path.read_text(errors="replace")
    assert "===== boot" in console and "distributor-agent: ready" in console
    assert "distributor-guest: address 10.200.45.1" in console
    assert network.list_taps(machine.net)[0] == "tap0"


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_a_taskset_runs_and_a_job_overrunning_its_period_ends_exit_period(machine, binaries):
    tasks = [
        # Periods leave the emulator ample time: a fork and exec take ~30 ms under TCG.
        task(0, "hey", arg1=1, period=400, numberofjobs=3, priority=0),
        task(1, "cond_42", arg1=42, period=150, numberofjobs=2, priority=127),  # computes for ever
        task(2, "idle", arg1=300, period=100, offset=20, numberofjobs=1, priority=5),  # sleeps past its period
        task(3, "cond_mod", arg1=105, numberofjobs=2, priority=20),  # 5 ms of CPU, back to back
        task(4, "tumatmul", arg1=20, period=1000, numberofjobs=1, priority=30),
    ]
    tracker = run_taskset(ready(machine), tasks)
    assert exit_types(tracker, 0) == ["EXIT"] * 3
    assert exit_types(tracker, 1) == ["EXIT_PERIOD"] * 2
    assert exit_types(tracker, 2) == ["EXIT_PERIOD"]
    assert exit_types(tracker, 3) == ["EXIT"] * 2
    assert exit_types(tracker, 4) == ["EXIT"]
    hey = tracker.jobs[0]
    assert [job.release_ms for job in hey] == [0, 400, 800]
    assert all(job.release_ms <= job.start_ms < job.release_ms + 400 for job in hey)
    overrun = tracker.jobs[1]
    assert [job.end_ms // 150 for job in overrun] == [1, 2]  # killed at its period ends
    assert tracker.jobs[2][0].start_ms >= 20
    assert tracker.result().outcome == "unschedulable"


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_task_sets_follow_each_other_on_one_boot(machine, binaries):
    session = ready(machine)
    boots = session.boots
    for arg1 in (1, 2, 3):
        tracker = run_taskset(session, [task(0, "namaste", arg1=arg1), task(1, "pi", arg1=10)])
        assert tracker.result().outcome == "schedulable"
    assert session.boots == boots


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_killing_qemu_is_noticed_at_once_and_start_host_boots_it_again(machine, binaries):
    session = ready(machine)
    session.start([task(0, "cond_42", arg1=42, period=60_000, numberofjobs=1)])
    assert session.run(0.5) == [(0, "START", 0)]
    os.kill(session.child.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(TargetFailure, match="killed by signal 9"):
        while time.monotonic() - killed_at < 10:
            session.run(1.0)
    assert time.monotonic() - killed_at < 2
    session.stop_host()
    assert 0 not in network.list_taps(session.net)
    session.start_host()
    assert network.list_taps(session.net)[0] == "tap0"
    assert run_taskset(session, [task(0, "hey", arg1=1)]).result().outcome == "schedulable"
    assert session.info.console_path.read_text(errors="replace").count("===== boot") >= 2


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_a_guest_that_never_prints_its_marker_fails_after_the_startup_timeout(guest, pool_network, tmp_path):
    session = make_session(guest, 1, tmp_path, boot_marker="no guest prints this", startup_timeout=12.0)
    began = time.monotonic()
    with pytest.raises(TargetFailure, match=r"printed no boot marker /no guest prints this/ within 12 s"):
        session.start_host()
    assert 12 <= time.monotonic() - began < 20
    pid = session.child.pid
    session.stop_host()
    assert network.process_name(pid) is None
    assert 1 not in network.list_taps(pool_network)


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_qemu_dies_with_its_machine_worker_even_on_sigkill(guest, pool_network, tmp_path):
    """PR_SET_PDEATHSIG: a worker killed with SIGKILL cannot clean up, so the
    kernel kills its QEMU (the reconciler then deletes the tap)."""
    worker = textwrap.dedent(f"""
        import os, sys, logging, django
        django.setup()
        from django.conf import settings
        settings.DISTRIBUTOR_NETNS = {pool_network.netns!r}
        settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True
        settings.DATA_DIR = {str(pool_network.state_dir.parent.parent)!r}  # where network up keeps dnsmasq's pid
        from distributor.environment import host_environment
        from sessions import SessionInfo
        from sessions.qemu import QemuSession
        info = SessionInfo(machine_id=7, slot=2, address="", log=logging.getLogger("w"),
                           settings={{"kernel": {guest['KERNEL']!r}, "initrd": {guest['INITRD']!r}}},
                           host=host_environment())
        session = QemuSession(info)
        session._spawn()
        print(session.child.pid, flush=True)
        sys.stdin.read()
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen([sys.executable, "-c", worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                               text=True)
    try:
        qemu_pid = int(process.stdout.readline())
        assert network.process_name(qemu_pid) == "qemu-system-arm"
        handle = os.pidfd_open(qemu_pid)  # readable when QEMU ends, child of ours or not
        try:
            process.kill()
            process.wait(timeout=10)
            assert select.select([handle], [], [], 5)[0], "QEMU outlived its worker"
        finally:
            os.close(handle)
    finally:
        process.kill()
    assert network.cleanup_taps([0, 1], pool_network) == ["tap2"]


@pytest.mark.qemu
@pytest.mark.network
@pytest.mark.slow
def test_reboot_boots_a_fresh_guest_which_gets_its_binaries_again(machine, binaries):
    session = ready(machine)
    run_taskset(session, [task(0, "hey", arg1=1)])
    boots, pid = session.boots, session.child.pid
    assert session.sent_binaries

    session.reboot()  # what a machine does on `distributor reboot` or with reboot_every_taskset

    assert session.boots == boots + 1 and session.qemu_alive() and session.child.pid != pid
    assert not session.sent_binaries, "a fresh guest has none of the binaries"
    tracker = run_taskset(session, [task(0, "hey", arg1=1)])
    assert exit_types(tracker, 0) == ["EXIT"] and "hey" in session.sent_binaries


def test_an_abandoned_guest_is_killed_but_its_slots_tap_is_left_to_the_next_machine(tmp_path, monkeypatch):
    """A fenced machine's slot may be another machine's already: it kills its
    own QEMU, but deleting the tap (named by the slot) is stop_host's alone."""
    import pexpect

    deleted = []
    monkeypatch.setattr(network, "delete_tap", lambda slot, cfg: deleted.append(slot))
    session = unit_session(tmp_path, slot=2, tap=True)
    session.child = pexpect.spawn("sleep", ["1000"])  # leads its own session, as QEMU does
    pid = session.child.pid
    session.abandon()
    assert network.process_name(pid) is None and session.child is None
    assert deleted == []
    session.stop_host()
    assert deleted == [session.net_slot]
