"""The Genode task loader over TCP (DESIGN §5), with the seeds' ping check.

Every wait is on the socket with a deadline, so a task-set against an
instant target costs a few round trips instead of the seeds' 4 s of fixed
sleeps, and a dead target is noticed when its connection closes rather than
after a 40 s poll. The connection is kept across task-sets; the target keeps
the binaries it received until it reboots, so the session remembers what it
sent since the last boot (``start_host``) and sends only what is new.

What goes over the wire (command words, the description, event messages,
the admission goal) is ``sessions.genode_protocol``'s, and so are the user's
errors raised before a single byte goes out (``MissingBinary``,
``AdmissionError``). The binaries come from ``info.files``. Everything the
target does wrong is a ``TargetFailure`` whose message names the cause.
"""
from __future__ import annotations

import select
import socket
import subprocess
import time

from sessions import register
from sessions.addresses import DEFAULT_PORT, parse_address
from sessions.base import (HostFault, Session, TargetFailure, boolean_setting, cannot_run, integer_setting,
                           seconds_setting)
from sessions.events import RawEvent
from sessions.genode_protocol import (
    AVAILABLE, GO_SEND, REBOOT, START, STOP, MissingBinary, admission_xml, binary_message, read_word, take_events,
    taskset_head, taskset_xml, word,
)

# How often a long wait looks at the machine's stop event.
STOP_CHECK_S = 0.2
# The first retry of a refused connection comes quickly; later ones back off.
RETRY_FIRST_S, RETRY_MAX_S = 0.02, 0.5
PING_ARGV = ("ping", "-c", "1", "-W", "1")


@register
class GenodeSession(Session):
    kind = "genode"
    default_settings = {
        "connect_timeout": 5.0,  # one TCP connect, or one answer to AVAILABLE / GO_SEND
        "startup_timeout": 120.0,  # start_host: how long the target may take to answer AVAILABLE
        "ping": False,  # the seeds' PingSession: ICMP echo before connecting
        "max_message_bytes": 4 * 1024 * 1024,  # a larger size word is garbage, not a message
    }
    setting_rules = {
        "connect_timeout": seconds_setting(0.01, 600),
        "startup_timeout": seconds_setting(0.01, 24 * 3600),
        "ping": boolean_setting,
        "max_message_bytes": integer_setting(64, 256 * 1024 * 1024),
    }
    # A pool of this kind is its list of addresses; a subclass that makes
    # its own targets (QEMU) turns this off.
    needs_addresses = True
    sends_binaries = True

    def __init__(self, info):
        super().__init__(info)
        self.sock: socket.socket | None = None
        self.poller = select.poll()  # poll, not select: no FD_SETSIZE limit in a busy process
        self.buffer = bytearray()
        # name -> sha256 of every binary the target received since its last boot
        self.sent_binaries: dict[str, str] = {}
        self.last_heard = time.monotonic()
        # Tasks of the current task-set without JOBS_DONE yet: a task-set
        # stopped before they all came may still have events in flight.
        self.unfinished: set[int] = set()

    @classmethod
    def check_settings(cls, settings: dict, addresses: list[str]) -> dict[str, str]:
        errors = super().check_settings(settings, addresses)
        if cls.needs_addresses and not addresses:
            errors["addresses"] = f"a {cls.kind} pool needs at least one host:port (--hosts)"
        for address in addresses:
            try:
                parse_address(address)
            except ValueError as error:
                errors["addresses"] = str(error)
        return errors

    @property
    def endpoint(self) -> tuple[str, int]:
        try:
            return parse_address(self.info.address, DEFAULT_PORT)
        except ValueError as error:
            raise TargetFailure(f"machine {self.info.machine_id} has no usable address: {error}") from None

    # -- the host ------------------------------------------------------------

    def start_host(self) -> None:
        """A target at a fixed address is up when it answers AVAILABLE; its
        binaries are assumed gone (it may have rebooted since we last saw it)."""
        self.close()
        self.sent_binaries.clear()
        self.wait_until_available(self.settings["startup_timeout"])

    def stop_host(self) -> None:
        self.close()

    def reboot(self) -> None:
        """REBOOT, then wait until the target answers AVAILABLE again within
        its start-up timeout; it has no binaries after, so they go again."""
        if self.sock is None or self._has_stale_data():
            self._reconnect()
        self.log.info("target %s: REBOOT", self.info.address)
        self._send(word(REBOOT), "REBOOT")
        self._wait_for_close(self.settings["connect_timeout"])
        self.sent_binaries.clear()
        self.wait_until_available(self.settings["startup_timeout"], after=" after REBOOT")

    def _wait_for_close(self, timeout: float) -> None:
        """A rebooting target drops its connection: wait for that (at most
        ``timeout`` s), so the next AVAILABLE cannot reach the loader that is
        going down."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline, "the target went down for its reboot"):
                self.buffer.clear()  # whatever it said last no longer matters
        except TargetFailure:
            pass  # closed: it is rebooting
        finally:
            self.close()

    def wait_until_available(self, timeout: float, after: str = "") -> None:
        """Connect and ask AVAILABLE until the target answers or ``timeout`` s
        pass; refused connections are retried at once, then with a short
        back-off, never with a fixed delay."""
        deadline = time.monotonic() + timeout
        delay, last_error = RETRY_FIRST_S, "no attempt"
        while True:
            self.info.check_stop()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TargetFailure(
                    f"target {self.info.address} did not answer AVAILABLE within {timeout:g} s{after} "
                    f"(last error: {last_error})"
                )
            try:
                return self._open(min(self.settings["connect_timeout"], remaining))
            except TargetFailure as error:
                last_error = str(error)
            self.info.stop_event.wait(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX_S)

    # -- one task-set --------------------------------------------------------

    def is_available(self) -> bool:
        try:
            if self.sock is not None and not self._has_stale_data():
                self._ask_available(self.settings["connect_timeout"])
            else:
                self._reconnect()
        except TargetFailure as error:
            self.log.info("target %s not available: %s", self.info.address, error)
            self.close()
            return False
        return True

    def start(self, tasks: list[dict], admission: dict | None = None) -> None:
        goal = admission_xml(admission) if admission else ""
        binaries = self._binaries_to_send(tasks)
        if self.sock is None or self._has_stale_data():
            self._reconnect()
        self._send(taskset_head(taskset_xml(tasks), goal, len(binaries)), "the task-set description")
        for name, sha256, data in binaries:
            self._expect_go_send(name)
            self._send(binary_message(name, data), f"binary {name!r}")
            self.sent_binaries[name] = sha256
        self._send(word(START), "START")
        self.last_heard = time.monotonic()
        self.unfinished = {task["id"] for task in tasks}

    def run(self, timeout: float) -> list[RawEvent]:
        """The events that arrive within ``timeout`` s (returns as soon as
        there are some); silence past ``target_timeout`` is a failure."""
        if self.sock is None:
            raise TargetFailure("no connection to the target (the task-set was not started)")
        deadline = time.monotonic() + timeout
        events = self._parse_messages()
        while not events:
            silent_after = self.last_heard + self.info.target_timeout
            if not self._fill(min(deadline, silent_after), "waiting for events"):
                if time.monotonic() >= silent_after:
                    self._fail(f"target silent for {self.info.target_timeout:g} s")
                return []
            events = self._parse_messages()
        self.unfinished.difference_update(event.task_id for event in events if event.type == "JOBS_DONE")
        return events

    def stop(self) -> None:
        """STOP; after a task-set that had not finished, also close: events
        still in flight would otherwise be read as the next task-set's."""
        if self.sock is None:
            return
        try:
            self.sock.sendall(word(STOP))
        except OSError as error:
            self.log.info("STOP to %s failed (%s); closing", self.info.address, error)
            self.close()
        if self.unfinished:
            self.close()
            self.unfinished = set()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer.clear()

    # -- connection ----------------------------------------------------------

    def _open(self, timeout: float) -> None:
        """Connect (after a ping when asked to) and check AVAILABLE."""
        host, port = self.endpoint
        if self.settings["ping"] and not ping(host):
            raise TargetFailure(f"host {host} does not answer ping")
        self.close()
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            raise TargetFailure(f"cannot connect to {host}:{port}: {error.strerror or error}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bounds sendall only (reads wait in poll): a target that stops
        # reading for this long is as dead as a silent one.
        sock.settimeout(max(self.settings["connect_timeout"], self.info.target_timeout))
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self._ask_available(timeout)

    def _reconnect(self) -> None:
        self._open(self.settings["connect_timeout"])

    def _ask_available(self, timeout: float) -> None:
        self._send(word(AVAILABLE), "AVAILABLE")
        answer = self._read_word(timeout, "answer to AVAILABLE")
        if answer != AVAILABLE:
            self._fail(f"AVAILABLE answered 0x{answer:X}, expected 0x{AVAILABLE:X}")

    def _has_stale_data(self) -> bool:
        """Bytes (or a close) waiting before a task-set starts mean the target
        is in a state we did not put it in: start again on a fresh connection.
        A target that closed on us may have rebooted, so its binaries count
        as gone."""
        readable = self._readable(0)
        if not readable and not self.buffer:
            return False
        closed = False
        if readable:
            try:
                closed = self.sock.recv(1 << 16, socket.MSG_PEEK) == b""
            except OSError:
                closed = True
        if closed:
            self.sent_binaries.clear()
        self.log.warning("target %s: %s before a task-set; reconnecting", self.info.address,
                         "connection closed" if closed else "stale data")
        return True

    def _readable(self, timeout: float) -> bool:
        return bool(self.poller.poll(max(0, int(timeout * 1000 + 0.999))))

    def _send(self, data: bytes, what: str) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            self._fail(f"sending {what} failed: {error.strerror or error}")

    def _fill(self, deadline: float, what: str) -> bool:
        """Read what has arrived, waiting until ``deadline``; False on time-out."""
        while True:
            self.info.check_stop()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._readable(min(remaining, STOP_CHECK_S)):
                break
        try:
            chunk = self.sock.recv(1 << 20)
        except OSError as error:
            self._fail(f"connection lost while {what}: {error.strerror or error}")
        if not chunk:
            partial = f" ({len(self.buffer)} bytes of a message received)" if self.buffer else ""
            self._fail(f"target closed the connection while {what}{partial}")
        self.buffer += chunk
        self.last_heard = time.monotonic()
        return True

    def _read_word(self, timeout: float, what: str) -> int:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 4:
            if not self._fill(deadline, f"waiting for {what}"):
                self._fail(f"no {what} within {timeout:g} s")
        value = read_word(self.buffer)
        del self.buffer[:4]
        return value

    def _expect_go_send(self, name: str) -> None:
        timeout = max(self.settings["connect_timeout"], self.info.target_timeout)
        answer = self._read_word(timeout, f"GO_SEND for binary {name!r}")
        if answer != GO_SEND:
            self._fail(f"expected GO_SEND 0x{GO_SEND:X} before binary {name!r}, got 0x{answer:X}")

    def _parse_messages(self) -> list[RawEvent]:
        """Every complete message in the buffer; a partial one stays for later."""
        try:
            return take_events(self.buffer, self.settings["max_message_bytes"])
        except TargetFailure as error:
            self._fail(str(error))

    def _fail(self, message: str):
        """Close (the stream can no longer be trusted) and raise."""
        self.close()
        raise TargetFailure(message)

    # -- binaries ------------------------------------------------------------

    def _binaries_to_send(self, tasks: list[dict]) -> list[tuple[str, str, bytes]]:
        """(name, sha256, bytes) of the binaries the target lacks, in task order."""
        names = list(dict.fromkeys(task["pkg"] for task in tasks))
        # Every task-set asks, so only the checksums come every time and only
        # the binaries to send are loaded.
        checksums = self.info.files.checksums(names)
        missing = [name for name in names if name not in checksums]
        if missing:
            raise MissingBinary(missing)
        stale = [name for name in names if self.sent_binaries.get(name) != checksums[name]]
        files = self.info.files.binaries(stale) if stale else {}
        if len(files) < len(stale):  # deleted since
            raise MissingBinary([name for name in stale if name not in files])
        return [(name, files[name].sha256, files[name].data) for name in stale]


def ping(host: str, timeout: float = 5.0) -> bool:
    """One ICMP echo through the system's ping (no raw socket: no root
    needed). A ping this host cannot run is a HostFault: the same for every
    target of the pool, so no slot is to blame."""
    try:
        result = subprocess.run([*PING_ARGV, host], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    except (FileNotFoundError, PermissionError) as error:
        raise HostFault(f"settings.ping is on but the command {PING_ARGV[0]!r} {cannot_run(error)} on this host "
                        "(apt-get install iputils-ping)") from None
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
