"""Power-switched boards: power commands in order, waiting for the loader."""
from __future__ import annotations

import logging
import socket
import sys
import time

import pytest

from sessions import HostFault, SessionInfo, TargetFailure, get_session_class
from sessions.board import BoardSession
from tests.peer import TaskLoaderPeer

POWER_SCRIPT = """
import sys
with open(sys.argv[1], "a") as log:
    log.write(" ".join(sys.argv[2:]) + "\\n")
sys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)
"""


@pytest.fixture
def power_log(tmp_path):
    script = tmp_path / "poe.py"
    script.write_text(POWER_SCRIPT)
    log = tmp_path / "power.log"
    return log, f"{sys.executable} {script} {log}"


def board(address: str, command: str, **settings) -> BoardSession:
    settings = {"power_on": f"{command} on {{slot}} {{host}} {{port}} m{{machine_id}}",
                "power_off": f"{command} off {{slot}} {{host}} {{port}} m{{machine_id}}", **settings}
    info = SessionInfo(machine_id=7, slot=3, address=address, settings=settings,
                       log=logging.getLogger("tests.board"), target_timeout=2)
    return get_session_class("board")(info)


def lines(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_start_powers_off_then_on_and_waits_for_the_loader(power_log):
    log, command = power_log
    with TaskLoaderPeer("127.0.0.4", startup_delay=0.3) as peer:
        session = board(peer.address, command, connect_timeout=0.1)
        started = time.monotonic()
        session.start_host()
        assert time.monotonic() - started >= 0.25  # it waited for AVAILABLE, not a fixed delay
        session.stop_host()

    assert lines(log) == [f"off 3 127.0.0.4 {peer.port} m7", f"on 3 127.0.0.4 {peer.port} m7",
                          f"off 3 127.0.0.4 {peer.port} m7"]
    assert set(peer.commands) == {"AVAILABLE"}  # retried until it answered


def test_a_warm_start_only_powers_on_and_reboot_is_off_then_on(power_log):
    log, command = power_log
    with TaskLoaderPeer("127.0.0.4") as peer:
        session = board(peer.address, command, cold_start=False)
        session.start_host()
        session.reboot()
        session.close()

    assert [line.split()[0] for line in lines(log)] == ["on", "off", "on"]


def test_a_board_that_never_answers_is_reported_with_address_and_timeout(power_log):
    log, command = power_log
    address = _closed_port_address()
    session = board(address, command, startup_timeout=0.4)
    started = time.monotonic()

    with pytest.raises(TargetFailure, match=rf"target {address} did not answer AVAILABLE within 0\.4 s after power-on"):
        session.start_host()

    assert time.monotonic() - started < 1.5
    assert [line.split()[0] for line in lines(log)] == ["off", "on"]


def test_a_failing_power_command_is_a_target_failure(power_log):
    log, command = power_log
    session = board("127.0.0.4:3001", command, power_on=f"{command} on 3", cold_start=False)

    with pytest.raises(TargetFailure, match=r"board 127.0.0.4:3001: power_on command exited with status 3"):
        session.start_host()


def test_stop_host_never_raises(power_log):
    _, command = power_log
    session = board("127.0.0.4:3001", command, power_off="/nonexistent/poe off")

    session.stop_host()  # logged, not raised: it runs on every exit path


def test_a_power_command_this_host_lacks_is_the_hosts_fault_not_the_boards(power_log, tmp_path):
    """A host without the PoE tool cannot switch any board of the pool: the
    host is faulty, no slot is to blame."""
    _, command = power_log
    session = board("127.0.0.4:3001", command, power_off="/nonexistent/poe off")
    with pytest.raises(HostFault, match=r"settings.power_off: command '/nonexistent/poe' is not installed on host "
                                        r"this host \(board 127.0.0.4:3001\)"):
        session.start_host()

    unexecutable = tmp_path / "poe"
    unexecutable.write_text("#!/bin/sh\n")  # no x bit
    session = board("127.0.0.4:3001", command, power_on=f"{unexecutable} on {{slot}}", cold_start=False)
    with pytest.raises(HostFault, match=rf"settings.power_on: command '{unexecutable}' is not executable on host"):
        session.start_host()


def test_placeholders_stay_one_argument_each(power_log):
    session = board("127.0.0.4:3001", "poe", power_on="poe --label '{address} x' {slot:02d}")
    assert session.command("power_on") == ["poe", "--label", "127.0.0.4:3001 x", "03"]


def test_settings_need_both_commands_with_known_placeholders():
    errors = BoardSession.check_settings({"power_on": "poe on {ip}"}, ["127.0.0.4:3001"])
    assert errors["settings.power_on"].startswith("unknown placeholder {ip}")
    assert "is required" in errors["settings.power_off"]
    assert BoardSession.check_settings({"power_on": "poe on {slot}", "power_off": "poe off {slot}"},
                                       ["127.0.0.4:3001"]) == {}


def _closed_port_address() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.4", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"127.0.0.4:{port}"
