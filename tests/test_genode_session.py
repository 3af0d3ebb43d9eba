"""The genode session against the task-loader peer (DESIGN §5), loopback only."""
from __future__ import annotations

import logging
import shutil
import threading
import time

import pytest
from django.core.files.base import ContentFile

from distributor.files import UploadedFiles
from distributor.models import Binary
from distributor.taskfile import taskset_xml
from sessions import SessionInfo, Stopped, TargetFailure, get_session_class
from sessions.events import EventTracker
from sessions.genode import GenodeSession
from sessions.genode_protocol import AdmissionError, MissingBinary, admission_xml, parse_events
from tests.peer import FAULTS, TaskLoaderPeer

BINARIES = {"hey": b"\x7fELF hey binary", "pi": b"\x7fELF pi binary " * 100}


@pytest.fixture
def binaries(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path  # this host's cache
    return {name: Binary.store(name, ContentFile(data))[0] for name, data in BINARIES.items()}


@pytest.fixture
def peer():
    with TaskLoaderPeer("127.0.0.2", slow_start_seconds=0.2, events_per_message=5) as running:
        yield running


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def task(task_id: int, pkg: str = "hey", **fields) -> dict:
    return {"id": task_id, "pkg": pkg, "arg1": 0, "priority": task_id, "deadline": 0, "period": 10, "offset": 0,
            "numberofjobs": 3, "criticaltime": 0, "quota": "5M", "caps": 50, "cores": 1, "coreoffset": 0, **fields}


TASKS = [task(0), task(1, "pi", period=0, numberofjobs=2)]


def session_for(address: str, target_timeout: float = 5.0, **settings) -> GenodeSession:
    info = SessionInfo(machine_id=1, slot=0, address=address, settings=settings,
                       log=logging.getLogger("tests.genode"), target_timeout=target_timeout, files=UploadedFiles())
    return get_session_class("genode")(info)


def run_taskset(session: GenodeSession, tasks: list[dict], admission: dict | None = None,
                limit: float = 5.0) -> tuple[list, EventTracker]:
    """What a machine does with one task-set: start, read until done, stop."""
    session.start(tasks, admission=admission)
    tracker, received = EventTracker(tasks), []
    deadline = time.monotonic() + limit
    while not tracker.finished:
        assert time.monotonic() < deadline, "the task-set did not finish"
        events = session.run(0.5)
        received += events
        tracker.feed(events)
    session.stop()
    return received, tracker


@pytest.fixture
def session(peer, binaries):
    running = session_for(peer.address, target_timeout=0.5)
    running.start_host()
    yield running
    running.stop_host()


def test_it_returns_exactly_the_events_the_peer_sent(session, peer):
    events, tracker = run_taskset(session, TASKS)

    record = peer.tasksets[0]
    assert [tuple(event) for event in events] == record.events
    assert peer.wait_for(lambda: record.state == "done")
    assert record.descs_xml == taskset_xml(TASKS)
    assert len(tracker.all_jobs()) == 5
    assert record.messages >= 2  # several messages, several events each
    assert peer.errors == []


def test_it_speaks_the_commands_in_protocol_order(session, peer):
    run_taskset(session, TASKS)

    assert peer.wait_for(lambda: "STOP" in peer.commands)
    assert peer.boot.commands == ["AVAILABLE", "CLEAR", "SEND_DESCS", "SEND_BINARIES", "START", "STOP"]


def test_it_sends_each_binary_once_per_boot(session, peer):
    for _ in range(3):
        run_taskset(session, TASKS)
    assert peer.received_binaries() == [(0, "hey"), (0, "pi")]
    assert peer.boot.binaries == BINARIES

    peer.reboot()
    session.stop_host()
    session.start_host()  # what a machine does after a target failure
    run_taskset(session, TASKS)
    run_taskset(session, TASKS)

    assert peer.received_binaries() == [(0, "hey"), (0, "pi"), (1, "hey"), (1, "pi")]
    assert [record.binaries for record in peer.tasksets] == [["hey", "pi"], [], [], ["hey", "pi"], []]
    assert peer.errors == []


def test_a_replaced_binary_is_sent_again(session, peer, binaries):
    run_taskset(session, TASKS)
    new = b"\x7fELF hey, version 2"
    Binary.store("hey", ContentFile(new))

    run_taskset(session, TASKS)

    assert peer.received_binaries() == [(0, "hey"), (0, "pi"), (0, "hey")]
    assert peer.boot.binaries["hey"] == new


def test_a_target_that_lost_its_binaries_is_a_failure(session, peer):
    """The peer forgets binaries on reboot like a real target; a session that
    did not notice would be told by EXIT_ERROR."""
    run_taskset(session, TASKS)
    with peer.lock:
        peer.boot.binaries.clear()

    with pytest.raises(TargetFailure, match="EXIT_ERROR"):
        run_taskset(session, TASKS)
    assert "was not sent since boot 0" in peer.errors[0]


def test_optimize_is_sent_only_with_an_admission_goal(session, peer):
    goal = {"optimize": {"goal": {"fairness": {"apply": 1}}, "query_interval": 1000}}
    run_taskset(session, TASKS)
    run_taskset(session, TASKS, admission=goal)

    without, with_goal = peer.tasksets
    assert without.optimize_xml is None
    assert with_goal.optimize_xml == ("<optimize><goal><fairness><apply>1</apply></fairness></goal>"
                                      "<query_interval>1000</query_interval></optimize>")
    assert peer.commands.count("OPTIMIZE") == 1
    assert peer.errors == []  # no <?xml ?> header, well-formed


def test_admission_xml_names_the_bad_value():
    with pytest.raises(AdmissionError, match=r"admission\.optimize\.goal\.bad key"):
        admission_xml({"optimize": {"goal": {"bad key": 1}}})
    with pytest.raises(AdmissionError, match=r"admission\.optimize\.weight: .*ASCII"):
        admission_xml({"optimize": {"weight": "µ"}})
    assert admission_xml({"goal": "a<b", "query_interval": 5}) == \
        "<optimize><goal>a&lt;b</goal><query_interval>5</query_interval></optimize>"
    assert admission_xml({"optimize": {"@mode": "x\"y", "#text": "t"}}) == '<optimize mode=\'x"y\'>t</optimize>'
    assert admission_xml({"query_interval": 5}) == "<optimize><query_interval>5</query_interval></optimize>"


def test_a_missing_binary_is_the_users_error_and_nothing_is_sent(session, peer):
    with pytest.raises(MissingBinary, match="'nothere'") as raised:
        session.start([task(0, "nothere")])

    assert isinstance(raised.value, ValueError)
    assert "CLEAR" not in peer.commands


@pytest.mark.parametrize("fault, cause", [
    ("hang", r"target silent for 0\.5 s"),
    ("garbage", r"malformed XML in an event message"),
    ("drop", r"target closed the connection"),
    ("exit_error", r"EXIT_ERROR"),
    ("slow_start", r"target closed the connection"),
    ("wrong_job_count", r"JOBS_DONE after 2 jobs, expected 3"),
    ("oversized", r"size word 4294967280 exceeds max_message_bytes"),
    ("truncated", r"target closed the connection .*bytes of a message received"),
    ("non_ascii", r"non-ASCII byte 0xC3"),
    ("unknown_task", r"unknown task id 2"),
    ("unknown_structure", r"unknown structure: <statistics> inside <profile>"),
    ("clock_back", r"task 0: job 1 START at 0 ms, before job 0 ended at 1 ms"),
    ("repeated_job", r"task 0: job 1 START at 0 ms, before job 0 ended at 1 ms"),
    ("early_start", r"task 0: job 1 START at 1 ms, before its release at 10 ms"),
])
def test_every_fault_is_a_target_failure_with_its_cause(session, peer, fault, cause):
    peer.inject(fault)

    with pytest.raises(TargetFailure, match=cause):
        run_taskset(session, TASKS)

    assert peer.tasksets[0].fault == fault
    session.stop_host()
    session.start_host()  # the machine's restart; the peer has recovered
    run_taskset(session, TASKS)
    assert peer.wait_for(lambda: peer.tasksets[-1].state == "done")


def test_the_fault_list_is_covered():
    assert set(FAULTS) == {"hang", "garbage", "drop", "exit_error", "slow_start", "wrong_job_count", "oversized",
                           "truncated", "non_ascii", "unknown_task", "unknown_structure", "clock_back",
                           "repeated_job", "early_start"}


def test_a_dropped_connection_is_noticed_within_a_second(binaries):
    with TaskLoaderPeer("127.0.0.3", time_scale=1, exec_time=2) as peer:
        session = session_for(peer.address, target_timeout=40)
        session.start_host()
        session.start([task(0, period=50, numberofjobs=40)])  # two seconds of events
        assert session.run(2.0)  # the first events arrived
        peer.reboot()
        dropped = time.monotonic()
        with pytest.raises(TargetFailure, match="target closed the connection"):
            while True:
                session.run(0.5)
        assert time.monotonic() - dropped < 1.0
        session.close()


def test_a_silent_target_fails_after_target_timeout(session, peer):
    peer.inject("hang")
    session.start(TASKS)
    started = time.monotonic()

    with pytest.raises(TargetFailure, match=r"target silent for 0\.5 s"):
        while True:
            session.run(0.1)

    assert 0.45 <= time.monotonic() - started < 1.5


def test_run_returns_nothing_while_the_target_is_quietly_working(binaries):
    with TaskLoaderPeer("127.0.0.3", time_scale=1) as peer:
        session = session_for(peer.address, target_timeout=5)
        session.start_host()
        session.start([task(0, offset=400, numberofjobs=1)])
        started = time.monotonic()
        assert session.run(0.1) == []
        assert 0.09 <= time.monotonic() - started < 0.3
        session.stop()
        assert peer.wait_for(lambda: peer.commands[-1] == "STOP")
        session.close()


def test_stop_ends_a_running_taskset_and_the_next_one_runs(binaries):
    with TaskLoaderPeer("127.0.0.3", time_scale=1) as peer:
        session = session_for(peer.address)
        session.start_host()
        session.start([task(0, period=100, numberofjobs=30)])
        assert session.run(1.0)
        session.stop()
        events, tracker = run_taskset(session, [task(0, period=1, numberofjobs=2)])
        assert tracker.finished
        assert peer.wait_for(lambda: peer.tasksets[-1].state == "done")
        assert peer.tasksets[0].state in ("stopped", "client_closed")
        session.close()


def test_a_stop_request_interrupts_a_wait(session, peer):
    peer.inject("hang")
    session.start(TASKS)
    session.info.target_timeout = 30
    threading.Timer(0.1, session.info.stop_event.set).start()
    started = time.monotonic()

    with pytest.raises(Stopped):
        while True:
            session.run(5)
    assert time.monotonic() - started < 0.6


def test_start_host_waits_for_a_slow_start_without_fixed_delays(binaries):
    with TaskLoaderPeer("127.0.0.3", startup_delay=0.4) as peer:
        session = session_for(peer.address, connect_timeout=0.1)
        started = time.monotonic()
        session.start_host()
        waited = time.monotonic() - started
        assert 0.35 <= waited < 1.0
        run_taskset(session, TASKS)
        session.close()


def test_start_host_gives_up_after_the_startup_timeout(binaries):
    with TaskLoaderPeer("127.0.0.3", startup_delay=30) as peer:
        session = session_for(peer.address, connect_timeout=0.1, startup_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TargetFailure, match=rf"target {peer.address} did not answer AVAILABLE within 0\.5 s"):
            session.start_host()
        assert time.monotonic() - started < 1.0


def test_a_closed_port_is_retried_until_the_startup_timeout():
    session = session_for(_closed_port_address(), startup_timeout=0.3)
    with pytest.raises(TargetFailure, match=r"within 0\.3 s \(last error: cannot connect"):
        session.start_host()


def test_is_available_answers_without_raising(session, peer):
    assert session.is_available()
    assert not session_for(_closed_port_address()).is_available()


@pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils-ping (tests/peer/APT_PACKAGES.txt)")
def test_the_ping_check_passes_a_host_that_answers(peer, binaries):
    pinging = session_for(peer.address, ping=True)
    assert pinging.is_available()  # the real ping, against loopback
    pinging.start_host()
    run_taskset(pinging, TASKS)
    pinging.close()


def test_the_ping_check_skips_hosts_that_do_not_answer(peer, binaries, monkeypatch):
    monkeypatch.setattr("sessions.genode.PING_ARGV", ("false",))
    silent = session_for(peer.address, ping=True, startup_timeout=0.2)
    assert not silent.is_available()
    with pytest.raises(TargetFailure, match="host 127.0.0.2 does not answer ping"):
        silent.start_host()
    assert peer.commands == []  # never connected


def test_a_machine_at_time_scale_zero_runs_hundreds_of_tasksets_per_second(session, peer):
    """No sleeps: the seed needed ~4 s per task-set against an instant target."""
    started = time.monotonic()
    for _ in range(100):
        run_taskset(session, TASKS)
    elapsed = time.monotonic() - started

    assert len(peer.tasksets) == 100
    assert elapsed < 5.0, f"100 task-sets took {elapsed:.2f} s"


def test_event_messages_are_parsed_strictly():
    body = b'<profile><events><event task-id="0" type="START" time-stamp="12"/></events></profile>\0'
    assert parse_events(body) == [(0, "START", 12)]
    with pytest.raises(TargetFailure, match="without the attribute 'time-stamp'"):
        parse_events(b'<profile><events><event task-id="0" type="START"/></events></profile>\0')
    with pytest.raises(TargetFailure, match="root element <html>"):
        parse_events(b"<html/>\0")
    with pytest.raises(TargetFailure, match="refused XML"):
        parse_events(b'<!DOCTYPE p [<!ENTITY a "b">]><profile>&a;</profile>\0')


def test_the_loaders_own_form_and_any_other_well_formed_form_read_alike(monkeypatch):
    """The task loader's exact form is read by a regular expression, anything
    else by the XML parser: both give the same events and refuse the same
    numbers."""
    from sessions import genode_protocol

    canonical = (b'<profile><events><event task-id="0" type="START" time-stamp="12"/>'
                 b'<event task-id="2" type="EXIT_PERIOD" time-stamp="9007199254740993"/></events></profile>\0')
    other_forms = [
        canonical.replace(b"><event", b">\n  <event"),  # indented
        canonical.replace(b'task-id="0" type="START"', b'type="START" task-id="0"'),  # attributes reordered
        canonical.replace(b'"/>', b'" />'),
    ]
    expected = [(0, "START", 12), (2, "EXIT_PERIOD", 9007199254740993)]
    assert genode_protocol._CANONICAL_MESSAGE.fullmatch(canonical)
    assert parse_events(canonical) == expected
    for body in other_forms:
        assert not genode_protocol._CANONICAL_MESSAGE.fullmatch(body)
        assert parse_events(body) == expected
    assert parse_events(b"<profile><events></events></profile>\0") == []
    too_big = b'<profile><events><event task-id="4294967295" type="START" time-stamp="0"/></events></profile>\0'
    with pytest.raises(TargetFailure, match="task-id 4294967295 out of range"):
        parse_events(too_big)
    with pytest.raises(TargetFailure, match="task-id 4294967295 out of range"):
        parse_events(too_big.replace(b"<event ", b"<event  "))  # the XML parser's path
    with pytest.raises(TargetFailure, match="without its trailing NUL"):
        parse_events(canonical[:-1])


def test_settings_are_checked_by_name():
    errors = GenodeSession.check_settings({"connect_timeout": "fast", "ping": "yes", "max_message_bytes": 10,
                                           "colour": 1}, [])
    assert set(errors) == {"settings.connect_timeout", "settings.ping", "settings.max_message_bytes",
                           "settings.colour", "addresses"}
    assert GenodeSession.check_settings({"ping": True}, ["127.0.0.2:3001"]) == {}


def _closed_port_address() -> str:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.2", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"127.0.0.2:{port}"


def test_reboot_makes_a_new_boot_and_the_binaries_go_again(session, peer):
    run_taskset(session, TASKS)

    session.reboot()
    assert peer.wait_for(lambda: len(peer.boots) == 2)
    session.start_host()
    run_taskset(session, TASKS)

    assert peer.boots[0].commands[-1] == "REBOOT"
    assert peer.received_binaries() == [(0, "hey"), (0, "pi"), (1, "hey"), (1, "pi")]


def test_random_faults_are_reproducible_from_the_seed(binaries):
    def faults(seed: int) -> list:
        with TaskLoaderPeer("127.0.0.3", fault_rate=0.5, fault_kinds=("exit_error", "garbage"), seed=seed) as peer:
            session = session_for(peer.address)
            session.start_host()
            for _ in range(12):
                try:
                    run_taskset(session, TASKS)
                except TargetFailure:
                    session.stop_host()
                    session.start_host()
            session.close()
            return [record.fault for record in peer.tasksets]

    first = faults(seed=5)
    assert first == faults(seed=5)
    assert {"exit_error", "garbage", None} == set(first)


def test_reboot_sends_reboot_waits_for_the_target_and_its_binaries_go_again(session, peer):
    run_taskset(session, TASKS)
    peer.reboot_seconds = 0.3
    began = time.monotonic()

    session.reboot()

    assert time.monotonic() - began >= 0.3, "it waited for the target to answer AVAILABLE again"
    assert peer.commands.count("REBOOT") == 1 and len(peer.boots) == 2
    run_taskset(session, TASKS)
    assert peer.received_binaries() == [(0, "hey"), (0, "pi"), (1, "hey"), (1, "pi")]
    assert peer.errors == []


def test_a_target_that_does_not_come_back_from_reboot_is_a_failure(session, peer):
    peer.reboot_seconds = 30
    session.settings["startup_timeout"] = 0.5
    with pytest.raises(TargetFailure, match=r"did not answer AVAILABLE within 0\.5 s after REBOOT"):
        session.reboot()
    assert peer.commands.count("REBOOT") == 1
