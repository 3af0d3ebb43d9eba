"""A Genode task-loader stand-in: the target side of DESIGN §5 over TCP.

Tests and the benchmark need targets that answer in microseconds, record
exactly what they were sent, and misbehave on demand, none of which a QEMU
guest does. The constants below are written out again on purpose instead of
being imported from ``sessions.genode_protocol``: a typo in one side must not be
hidden by the other side sharing it.

A peer serves one connection at a time, like the real loader. Its records
are what the tests compare the database with: every command, description,
admission goal and binary it received (per boot) and every event it sent
(per task-set).
"""
from __future__ import annotations

import hashlib
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from defusedxml import ElementTree as SafeET

from tests.peer.model import Event, ExecTime, events_xml, frame, parse_taskset, simulate

AVAILABLE = 0xAAAAA
CLEAR = 0xDE6
OPTIMIZE = 0x6F7074
SEND_DESCS = 0xDE5
SEND_BINARIES = 0xDE5F11E
GO_SEND = 0x90
START = 0x514DE5
STOP = 0x514DE6
REBOOT = 0x159D3
COMMAND_NAMES = {
    AVAILABLE: "AVAILABLE", CLEAR: "CLEAR", OPTIMIZE: "OPTIMIZE", SEND_DESCS: "SEND_DESCS",
    SEND_BINARIES: "SEND_BINARIES", START: "START", STOP: "STOP", REBOOT: "REBOOT",
}
EXIT_TYPES = ("EXIT", "EXIT_PERIOD", "NOT_SCHEDULED")
FAULTS = (
    "hang", "garbage", "drop", "exit_error", "slow_start", "wrong_job_count",
    "oversized", "truncated", "non_ascii", "unknown_task", "unknown_structure",
    "clock_back", "repeated_job", "early_start",
)
# Faults in the event stream itself: well-formed messages, wrong events.
STREAM_FAULTS = ("exit_error", "wrong_job_count", "unknown_task", "missing_binary", "clock_back", "repeated_job",
                 "early_start")
# What a client may send us in one piece; more is a client bug, not a test.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
OVERSIZED_WORD = 0xFFFFFFF0

log = logging.getLogger("tests.peer")


@dataclass
class TaskSetRecord:
    """One START: what the peer was given for it and what it sent back."""

    boot: int
    descs_xml: str
    tasks: list[dict]
    optimize_xml: str | None
    binaries: list[str]  # names received since the previous START
    fault: str | None = None
    ran: dict[str, str] = field(default_factory=dict)  # sha256 by pkg of the binaries its tasks ran
    events: list[Event] = field(default_factory=list)  # sent in well-formed messages, in order
    messages: int = 0
    # running, done, stopped (STOP), interrupted (another command), hung,
    # dropped (the peer closed: a fault), client_closed
    state: str = "running"

    def events_of(self, task_id: int) -> list[Event]:
        return [event for event in self.events if event[0] == task_id]


@dataclass
class Boot:
    """What a target keeps until it reboots."""

    number: int
    binaries: dict[str, bytes] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)  # every binary arrival, repeats kept
    commands: list[str] = field(default_factory=list)
    tasksets: list[TaskSetRecord] = field(default_factory=list)


class _Disconnected(Exception):
    """The client closed the connection, or the peer dropped it."""


class _Closing(Exception):
    """The peer is shutting down."""


@dataclass
class _Pending:
    descs_xml: str | None = None
    tasks: list[dict] | None = None
    optimize_xml: str | None = None
    binaries: list[str] = field(default_factory=list)


class TaskLoaderPeer:
    """One target: ``with TaskLoaderPeer("127.0.0.2") as peer: peer.address``.

    ``time_scale`` 0 pushes all events as fast as possible; 1 pushes each at
    its time stamp in real time. ``exec_time`` is a job's execution time in
    ms, a number or ``f(task, job_number)``. Faults: ``inject(kind)`` for the
    next task-set, or ``fault_rate`` with ``fault_kinds`` and ``seed``.
    """

    def __init__(self, host: str = "127.0.0.2", port: int = 0, *, time_scale: float = 0.0,
                 exec_time: ExecTime = 1, events_per_message: int = 16, startup_delay: float = 0.0,
                 fault_rate: float = 0.0, fault_kinds: tuple[str, ...] = FAULTS, seed: int = 0,
                 slow_start_seconds: float = 1.0, quota_needed: int = 0, reboot_seconds: float = 0.0,
                 broken: str | None = None):
        _check_faults(fault_kinds)
        self.host, self.port = host, port
        self.time_scale = time_scale
        self.exec_time = exec_time
        self.events_per_message = max(1, events_per_message)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.slow_start_seconds = slow_start_seconds
        self.quota_needed = quota_needed  # bytes a task's quota must give, else OUT_OF_QUOTA
        self.reboot_seconds = reboot_seconds  # how long a REBOOT takes before AVAILABLE is answered again
        self.broken: str | None = None  # a fault on every task-set until repaired (``break_with``)
        if broken:
            self.break_with(broken)
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified whenever a record changes
        self.boots: list[Boot] = [Boot(0)]
        self.commands: list[str] = []
        self.tasksets: list[TaskSetRecord] = []
        self.errors: list[str] = []  # the client broke the protocol
        self.connections = 0
        self._faults: list[str] = []
        self._up_at = time.monotonic() + startup_delay
        self._drop = False
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()

    # -- life cycle ----------------------------------------------------------

    def start(self) -> "TaskLoaderPeer":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(8)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"peer {self.address}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._wake()
        if self._thread:
            self._thread.join(5)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock:
                sock.close()

    def __enter__(self) -> "TaskLoaderPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def boot(self) -> Boot:
        return self.boots[-1]

    # -- what tests ask for ---------------------------------------------------

    def inject(self, kind: str) -> None:
        """Misbehave on the next task-set (queued: several calls, several task-sets)."""
        _check_faults([kind])
        with self.lock:
            self._faults.append(kind)

    def break_with(self, kind: str | None) -> None:
        """Misbehave on every task-set from now on (a broken board); None repairs it."""
        if kind is not None:
            _check_faults([kind])
        with self.lock:
            self.broken = kind

    def reboot(self, delay: float = 0.0) -> None:
        """Forget the binaries, drop the connection, answer AVAILABLE after ``delay`` s."""
        with self.lock:
            self._new_boot(delay)
            self._drop = True
        self._wake()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a record
        changes): the peer runs in its own thread, so what the client sent
        last may not be recorded yet when the client returns."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def received_binaries(self) -> list[tuple[int, str]]:
        """(boot, name) of every binary that arrived, repeats kept."""
        return [(boot.number, name) for boot in self.boots for name in boot.received]

    def _new_boot(self, delay: float) -> None:
        self.boots.append(Boot(len(self.boots)))
        self._up_at = time.monotonic() + delay

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass

    # -- serving -------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                if not self._wait_readable(self._listener, None):
                    continue
                conn, _ = self._listener.accept()
            except _Disconnected:  # a reboot() while nobody was connected
                continue
            except (_Closing, OSError):
                return
            with self.lock:
                self.connections += 1
            try:
                self._handle(_Connection(conn, self))
            except (_Disconnected, OSError):
                pass
            except _Closing:
                return
            finally:
                conn.close()

    def _wait_readable(self, sock: socket.socket, timeout: float | None) -> bool:
        """Wait for ``sock`` or a wake-up; True when ``sock`` is readable."""
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ, "sock")
            selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            ready = {key.data for key, _ in selector.select(timeout)}
        if "wake" in ready:
            self._wake_r.recv(4096)
            self._check_flags()
        return "sock" in ready

    def _check_flags(self) -> None:
        if self._closing.is_set():
            raise _Closing()
        with self.lock:
            drop, self._drop = self._drop, False
        if drop:
            raise _Disconnected("the peer dropped the connection")

    def _handle(self, conn: "_Connection") -> None:
        pending = _Pending()
        word = conn.read_word()
        while True:
            name = COMMAND_NAMES.get(word)
            self._record_command(name or f"UNKNOWN 0x{word:X}")
            if name is None:
                return self._error(f"unknown command word 0x{word:X}; closing the connection")
            if word == START:
                word = self._start(conn, pending)
                pending = _Pending()
                continue
            if word == CLEAR:
                pending = _Pending()
            elif word == REBOOT:
                with self.lock:
                    self._new_boot(self.reboot_seconds)
                return
            else:
                self._simple_command(conn, word, pending)
            word = conn.read_word()

    def _record_command(self, name: str) -> None:
        with self.changed:
            self.commands.append(name)
            self.boot.commands.append(name)
            self.changed.notify_all()

    def _error(self, message: str) -> None:
        log.warning("peer %s: %s", self.address, message)
        with self.lock:
            self.errors.append(message)

    def _simple_command(self, conn: "_Connection", word: int, pending: _Pending) -> None:
        if word == AVAILABLE:
            conn.wait_until(self._up_at)
            conn.send(struct.pack("<I", AVAILABLE))
        elif word == OPTIMIZE:
            pending.optimize_xml = self._receive_optimize(conn)
        elif word == SEND_DESCS:
            pending.descs_xml, pending.tasks = self._receive_descs(conn)
        elif word == SEND_BINARIES:
            self._receive_binaries(conn, pending)
        # STOP while idle: nothing runs, nothing to do.

    def _receive_optimize(self, conn: "_Connection") -> str:
        text = conn.read_sized("OPTIMIZE").decode("ascii", "replace")
        if text.lstrip().startswith("<?xml"):
            self._error("OPTIMIZE: the goal starts with an <?xml ...?> header")
        try:
            SafeET.fromstring(text.rstrip("\0"), forbid_dtd=True)
        except Exception as error:  # noqa: BLE001 - any parse problem is the client's
            self._error(f"OPTIMIZE: not well-formed XML ({error})")
        return text.rstrip("\0")

    def _receive_descs(self, conn: "_Connection") -> tuple[str, list[dict] | None]:
        text = conn.read_sized("SEND_DESCS").decode("ascii", "replace").rstrip("\0")
        try:
            return text, parse_taskset(text)
        except ValueError as error:
            self._error(f"SEND_DESCS: {error}")
            return text, None

    def _receive_binaries(self, conn: "_Connection", pending: _Pending) -> None:
        count = conn.read_word()
        for _ in range(count):
            conn.send(struct.pack("<I", GO_SEND))
            raw_name = conn.read_exact(16)
            if raw_name[15:] != b"\0":
                self._error(f"SEND_BINARIES: name field {raw_name!r} is not 15 bytes + NUL")
            name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
            data = conn.read_sized(f"binary {name}")
            with self.lock:
                self.boot.binaries[name] = data
                self.boot.received.append(name)
            pending.binaries.append(name)

    # -- running a task-set -------------------------------------------------

    def _start(self, conn: "_Connection", pending: _Pending) -> int:
        """Run the pending task-set; returns the next command word."""
        if pending.tasks is None:
            self._error("START without a valid SEND_DESCS")
            return conn.read_word()
        fault = self._next_fault()
        record = TaskSetRecord(self.boot.number, pending.descs_xml or "", pending.tasks,
                               pending.optimize_xml, list(pending.binaries), fault,
                               ran={task["pkg"]: hashlib.sha256(self.boot.binaries[task["pkg"]]).hexdigest()
                                    for task in pending.tasks if task["pkg"] in self.boot.binaries})
        with self.lock:
            self.tasksets.append(record)
            self.boot.tasksets.append(record)
        events = self._events_for(record)
        return _Stream(self, conn, record, events).run()

    def _next_fault(self) -> str | None:
        with self.lock:
            if self._faults:
                return self._faults.pop(0)
            if self.broken:
                return self.broken
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.fault_kinds)
        return None

    def _events_for(self, record: TaskSetRecord) -> list[Event]:
        missing = [task for task in record.tasks if task["pkg"] not in self.boot.binaries]
        for task in missing:
            self._error(f"START: binary {task['pkg']!r} of task {task['id']} was not sent since boot {self.boot.number}")
        if missing:
            record.fault = record.fault or "missing_binary"
            return [(task["id"], "EXIT_ERROR", 0) for task in missing]
        events = simulate(record.tasks, self.exec_time, self.quota_needed)
        return _corrupt_events(events, record.fault, len(record.tasks))


class _Connection:
    """One client connection with a receive buffer; every wait also watches
    the peer's wake-up socket so that close() and reboot() act at once."""

    def __init__(self, sock: socket.socket, peer: TaskLoaderPeer):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(10)  # a client that stops reading must not wedge close()
        self.sock, self.peer = sock, peer
        self.buffer = bytearray()

    def read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if self.peer._wait_readable(self.sock, None):
                self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise _Disconnected("the client closed the connection")
        self.buffer += chunk

    def read_word(self) -> int:
        return struct.unpack("<I", self.read_exact(4))[0]

    def read_sized(self, what: str) -> bytes:
        size = self.read_word()
        if size > MAX_RECEIVE_BYTES:
            self.peer._error(f"{what}: size word {size} exceeds {MAX_RECEIVE_BYTES}")
            raise _Disconnected("oversized message from the client")
        return self.read_exact(size)

    def poll_word(self, timeout: float) -> int | None:
        """A command word if one arrives within ``timeout`` s, else None."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 4:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.peer._wait_readable(self.sock, remaining):
                if time.monotonic() >= deadline:
                    return None
                continue
            self._fill()
        return self.read_word()

    def wait_until(self, moment: float) -> None:
        """Wait (still noticing a close) until the monotonic ``moment``."""
        while (remaining := moment - time.monotonic()) > 0:
            if self.peer._wait_readable(self.sock, remaining):
                self._fill()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hang(self) -> None:
        """Stop answering: swallow whatever comes until the client gives up."""
        while True:
            if self.peer._wait_readable(self.sock, None):
                self._fill()
                self.buffer.clear()


class _Stream:
    """Pushes one task-set's events in messages, applying its fault."""

    def __init__(self, peer: TaskLoaderPeer, conn: _Connection, record: TaskSetRecord, events: list[Event]):
        self.peer, self.conn, self.record, self.events = peer, conn, record, events
        self.fault_at = len(events) // 2  # faults strike at the first message past half way
        self.struck = record.fault is None or record.fault in STREAM_FAULTS

    def run(self) -> int:
        try:
            next_word = self._push()
        except (_Disconnected, OSError):
            if self.record.state == "running":
                self._end("client_closed")
            raise
        if next_word is not None:
            self._end("stopped" if next_word == STOP else "interrupted")
            return next_word
        self._end("done")
        return self.conn.read_word()

    def _end(self, state: str) -> None:
        with self.peer.changed:
            self.record.state = state
            self.peer.changed.notify_all()

    def _push(self) -> int | None:
        index, started = 0, time.monotonic()
        while index < len(self.events):
            end, word = self._next_batch(index, started)
            if word is not None:
                return word
            if not self.struck and end > self.fault_at:
                self.struck = True
                self._strike(self.events[index:end])
            else:
                self._send(self.events[index:end])
            index = end
        return None

    def _next_batch(self, index: int, started: float) -> tuple[int, int | None]:
        """The end of the next message's events, or a command that came first."""
        limit = min(index + self.peer.events_per_message, len(self.events))
        scale = self.peer.time_scale
        if scale <= 0:
            return limit, None
        due = started + self.events[index][2] * scale / 1000
        word = self.conn.poll_word(max(0.0, due - time.monotonic()))
        if word is not None:
            return index, word
        now_ms = (time.monotonic() - started) * 1000 / scale
        end = index + 1
        while end < limit and self.events[end][2] <= now_ms:
            end += 1
        return end, None

    def _send(self, events: list[Event]) -> None:
        with self.peer.lock:
            self.record.events.extend(events)
            self.record.messages += 1
        self.conn.send(frame(events_xml(events)))

    def _strike(self, events: list[Event]) -> None:
        """Send this message the way the record's fault wants it."""
        fault = self.record.fault
        body = events_xml(events)
        if fault == "hang":
            self._end("hung")
            self.conn.hang()
        elif fault == "drop":
            self._end("dropped")
            raise _Disconnected("fault: drop")
        elif fault == "slow_start":
            with self.peer.lock:
                self.peer._new_boot(self.peer.slow_start_seconds)
            self._end("dropped")
            raise _Disconnected("fault: crash and slow reboot")
        elif fault == "truncated":
            self.conn.send(struct.pack("<I", len(body)) + body[: len(body) // 2])
            self._end("dropped")
            raise _Disconnected("fault: truncated message")
        elif fault == "oversized":
            self.conn.send(struct.pack("<I", OVERSIZED_WORD) + body)
        else:
            self.conn.send(frame(_bad_body(fault, body)))
        self._end("running")


def _bad_body(fault: str, body: bytes) -> bytes:
    if fault == "garbage":
        return b"\x13#!garbage, not XML at all ]]>\x7f\0"
    if fault == "non_ascii":
        return body.replace(b'type="', 'type="\u00dc'.encode("utf-8"), 1)
    if fault == "unknown_structure":
        return b'<profile><statistics cpu="3"/></profile>\0'
    raise ValueError(f"unknown fault {fault!r}")


def _corrupt_events(events: list[Event], fault: str | None, task_count: int) -> list[Event]:
    """Faults that live in the event stream itself, applied before sending."""
    middle = len(events) // 2
    if fault == "exit_error":
        exits = [i for i, event in enumerate(events) if event[1] in EXIT_TYPES]
        index = next((i for i in exits if i >= middle), exits[-1])
        task_id, _, at = events[index]
        return events[:index] + [(task_id, "EXIT_ERROR", at)] + events[index + 1:]
    if fault == "wrong_job_count":
        return _drop_last_job(events, task_id=0)
    if fault == "unknown_task":
        return events[:middle] + [(task_count, "START", events[middle][2])] + events[middle:]
    if fault == "clock_back":
        return _reset_clock(events, middle)
    if fault == "repeated_job":
        return _repeat_first_job(events)
    if fault == "early_start":
        return _start_second_job_early(events)
    return events


def _reset_clock(events: list[Event], middle: int) -> list[Event]:
    """A loader whose timer restarts at 0 (a wrap, a soft reboot) just before
    the first START past half way; later stamps count from there."""
    reset = next((i for i in range(middle, len(events)) if events[i][1] == "START"), middle)
    back = events[reset][2]
    return events[:reset] + [(task_id, kind, at - back) for task_id, kind, at in events[reset:]]


def _repeat_first_job(events: list[Event]) -> list[Event]:
    """Send the first task with two jobs' job 0 twice and lose its last job:
    the job count stays right, the times do not."""
    task_id = _task_with_two_jobs(events)
    if task_id is None:
        return events
    events = _drop_last_job(events, task_id)
    own = [i for i, event in enumerate(events) if event[0] == task_id]
    first_end = next(i for i in own if events[i][1] in EXIT_TYPES)
    job = [events[i] for i in own if i <= first_end]
    return events[:first_end + 1] + job + events[first_end + 1:]


def _start_second_job_early(events: list[Event]) -> list[Event]:
    """The first task with two jobs begins its job 1 the moment its job 0
    ended, before job 1's release (a loader whose timer fired early); needs
    a gap between the two, as a periodic task's short job leaves."""
    task_id = _task_with_two_jobs(events)
    if task_id is None:
        return events
    own = [i for i, event in enumerate(events) if event[0] == task_id]
    first_end = next(i for i in own if events[i][1] in EXIT_TYPES)
    second_begin = next(i for i in own if i > first_end)
    second_end = next(i for i in own if i >= second_begin and events[i][1] in EXIT_TYPES)
    early = events[second_begin][2] - events[first_end][2]
    moved = {second_begin, second_end}
    return [(owner, kind, at - early if i in moved else at) for i, (owner, kind, at) in enumerate(events)]


def _task_with_two_jobs(events: list[Event]) -> int | None:
    ends = Counter(event[0] for event in events if event[1] in EXIT_TYPES)
    return min((task_id for task_id, count in ends.items() if count >= 2), default=None)


def _drop_last_job(events: list[Event], task_id: int) -> list[Event]:
    """Leave out task ``task_id``'s last job so its JOBS_DONE comes one job short."""
    ends = [i for i, event in enumerate(events) if event[0] == task_id and event[1] in EXIT_TYPES]
    last = ends[-1]
    drop = {last}
    if events[last][1] != "NOT_SCHEDULED":
        drop.add(max(i for i in range(last) if events[i][0] == task_id and events[i][1] == "START"))
    return [event for i, event in enumerate(events) if i not in drop]


def _check_faults(kinds) -> None:
    unknown = [kind for kind in kinds if kind not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")


class PeerFarm:
    """N peers on 127.0.0.2 … 127.0.0.(N+1), for pools of N machines.

    ``with PeerFarm(4, time_scale=0) as farm: farm.addresses`` gives the
    "host:port" list for ``target add --hosts``; ``farm.peer(address)`` and
    ``farm.tasksets`` give the records to compare the database with.
    """

    def __init__(self, count: int, first_host: int = 2, port: int = 0, **options):
        if not 1 <= count <= 254 - first_host + 1:
            raise ValueError(f"count {count}: loopback hosts 127.0.0.{first_host}..254 only")
        self.peers = [TaskLoaderPeer(f"127.0.0.{first_host + i}", port, **options) for i in range(count)]

    def __enter__(self) -> "PeerFarm":
        started = []
        try:
            for peer in self.peers:
                started.append(peer.start())
        except BaseException:
            for peer in started:
                peer.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for peer in self.peers:
            peer.close()

    @property
    def addresses(self) -> list[str]:
        return [peer.address for peer in self.peers]

    def peer(self, address: str) -> TaskLoaderPeer:
        return next(peer for peer in self.peers if peer.address == address)

    @property
    def tasksets(self) -> list[TaskSetRecord]:
        return [record for peer in self.peers for record in peer.tasksets]
