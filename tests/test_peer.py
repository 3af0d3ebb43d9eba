"""The task-loader test peer itself: its execution model and its farm."""
from __future__ import annotations

import socket
import struct

from tests.peer import PeerFarm, TaskLoaderPeer, simulate


def task(task_id: int, **fields) -> dict:
    return {"id": task_id, "pkg": "hey", "priority": task_id, "deadline": 0, "period": 10, "offset": 0,
            "numberofjobs": 2, **fields}


def test_a_higher_priority_release_preempts_a_running_job():
    events = simulate([task(0, period=10, numberofjobs=2), task(1, period=0, numberofjobs=1)], exec_time=6)

    assert events == [(0, "START", 0), (0, "EXIT", 6), (1, "START", 6), (0, "START", 10), (0, "EXIT", 16),
                      (0, "JOBS_DONE", 16), (1, "EXIT", 18), (1, "JOBS_DONE", 18)]


def test_jobs_are_killed_at_their_period_end_or_never_scheduled():
    events = simulate([task(0, period=10, numberofjobs=2), task(1, period=10, numberofjobs=1)], exec_time=12)

    assert events == [(0, "START", 0), (0, "EXIT_PERIOD", 10), (1, "NOT_SCHEDULED", 10), (1, "JOBS_DONE", 10),
                      (0, "START", 10), (0, "EXIT_PERIOD", 20), (0, "JOBS_DONE", 20)]


def test_period_zero_runs_jobs_back_to_back_from_the_offset():
    events = simulate([task(0, period=0, offset=5, numberofjobs=3)], exec_time=lambda t, k: k + 1)

    assert events == [(0, "START", 5), (0, "EXIT", 6), (0, "START", 6), (0, "EXIT", 8), (0, "START", 8),
                      (0, "EXIT", 11), (0, "JOBS_DONE", 11)]


def test_a_farm_serves_consecutive_loopback_hosts():
    with PeerFarm(3) as farm:
        assert [address.rsplit(":", 1)[0] for address in farm.addresses] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        for address in farm.addresses:
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=2) as client:
                client.sendall(struct.pack("<I", 0xAAAAA))
                assert struct.unpack("<I", client.recv(4)) == (0xAAAAA,)
        assert all(farm.peer(address).wait_for(lambda p=farm.peer(address): p.commands == ["AVAILABLE"])
                   for address in farm.addresses)


def test_an_unknown_command_is_recorded_as_the_clients_error():
    with TaskLoaderPeer("127.0.0.5") as peer:
        with socket.create_connection(("127.0.0.5", peer.port), timeout=2) as client:
            client.sendall(struct.pack("<I", 0x1234))
            assert client.recv(4) == b""  # the peer hung up
        assert peer.errors == ["unknown command word 0x1234; closing the connection"]
