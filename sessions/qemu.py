"""QEMU targets: a machine boots its own guest and talks to it as a Genode target.

Machine slot *i* gets tap *i* on the bridge of ``python manage.py network up``,
the MAC and address of slot *i* (``sessions.qemu_network``), and a QEMU that is
its own child: started under pexpect in a process group of its own, with
PR_SET_PDEATHSIG so that it dies with its machine worker even when the worker
is SIGKILLed, and killed (group and tap) on every exit path.

The whole console goes to ``info.console_path`` (appended across boots, one
marker line per boot). A thread reads it continuously, so QEMU never blocks on
a full pty, and watches for the boot marker; ``start_host`` returns when the
marker has appeared and the task loader answers AVAILABLE — no fixed delay
(the seeds waited 20 s). A QEMU that exits is noticed at once: the reader
closes the task-loader connection, so a waiting ``run`` fails immediately
instead of after the target time-out.

The defaults boot the project's ARM test guest (tests/guest/build.sh) with
``-M virt`` and virtio-net; a Genode pool sets e.g. ``machine`` to
``realview-pbx-a9``, ``nic`` to ``lan9118`` with ``nic_onboard`` true, and its
own ``boot_marker``.
"""
from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pexpect

from sessions import qemu_network, register
from sessions.base import HostEnvironment, HostFault, TargetFailure, boolean_setting, integer_setting, seconds_setting
from sessions.console import RotatingConsole
from sessions.events import RawEvent
from sessions.genode import GenodeSession

PR_SET_PDEATHSIG = 1
READ_CHUNK = 1 << 16
# The reader wakes at least this often to see whether it should end; the
# marker itself is seen as soon as its bytes arrive.
READ_WAKE_S = 0.2
TAIL_LINES = 15
MEMORY = re.compile(r"^[1-9][0-9]{0,6}[MG]?$")


def _text(value) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _word(value) -> str | None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        return "must be a non-empty string without spaces"
    return None


def _memory(value) -> str | None:
    return None if isinstance(value, str) and MEMORY.match(value) else "must be a size such as 256M or 1G"


def _arguments(value) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return 'must be a list of strings, e.g. ["-rtc", "base=utc"]'
    return None


def _regex(value) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty regular expression"
    try:
        re.compile(value)
    except re.error as error:
        return f"is not a regular expression: {error}"
    return None


@register
class QemuSession(GenodeSession):
    kind = "qemu"
    needs_addresses = False
    boot_image_settings = ("kernel", "initrd")
    default_settings = {
        **GenodeSession.default_settings,
        "startup_timeout": 60.0,  # from QEMU's start to the marker and AVAILABLE
        "qemu": "qemu-system-arm",
        "machine": "virt,highmem=off",
        "cpu": "",  # "" = the machine's default CPU
        "cpus": 1,
        "memory": "256M",
        "kernel": "",  # the name of an uploaded boot image (the seeds' image.elf); a path where the site allows
        "initrd": "",
        "append": "console=ttyAMA0 quiet",
        "nic": "virtio-net-device",
        "nic_onboard": False,  # true for a board's own NIC (lan9118): -nic model=… instead of -device
        "tap": True,  # false: no tap; extra_args bring their own network
        # Taps, MACs and addresses are per host: a second QEMU pool on the
        # same host starts its slots after the first pool's.
        "first_slot": 0,
        "port": 3001,
        "extra_args": [],
        "boot_marker": r"distributor-agent: ready",
    }
    setting_rules = {
        **GenodeSession.setting_rules,
        "qemu": _word,
        "machine": _word,
        "cpu": _text,
        "cpus": integer_setting(1, 64),
        "memory": _memory,
        "kernel": _text,
        "initrd": _text,
        "append": _text,
        "nic": _word,
        "nic_onboard": boolean_setting,
        "tap": boolean_setting,
        "port": integer_setting(1, 65535),
        "first_slot": integer_setting(0, 65535),
        "extra_args": _arguments,
        "boot_marker": _regex,
        "startup_timeout": seconds_setting(1, 3600),
    }

    def __init__(self, info):
        super().__init__(info)
        self.net = qemu_network.config(info.host)
        # The slot on the host's bridge: tap, MAC and DHCP address.
        self.net_slot = self.settings["first_slot"] + info.slot
        if not info.address:
            info.address = f"{qemu_network.guest_address(self.net_slot, self.net)}:{self.settings['port']}"
        self.child: pexpect.spawn | None = None
        self.console: ConsoleReader | None = None
        self.boots = 0
        self.boot_seconds: float | None = None  # QEMU start to AVAILABLE, last boot

    @classmethod
    def check_settings(cls, settings: dict, addresses: list[str]) -> dict[str, str]:
        errors = super().check_settings(settings, addresses)
        if not settings.get("kernel"):
            errors["settings.kernel"] = "a qemu pool needs a kernel image (an uploaded boot image's name)"
        return errors

    @classmethod
    def capacity(cls, target, host: HostEnvironment) -> int | None:
        first = (target.settings or {}).get("first_slot", 0)
        return max(0, qemu_network.config(host).slots - first)

    @classmethod
    def reap(cls, machine, host: HostEnvironment) -> None:
        """A dead machine's QEMU died with it (PR_SET_PDEATHSIG); its tap
        remains on its own host, which is the only one that can delete it."""
        if machine.host == host.name:
            qemu_network.delete_tap((machine.target.settings or {}).get("first_slot", 0) + machine.slot,
                                    qemu_network.config(host))

    @classmethod
    def clean_up_host(cls, live_machines: Sequence, host: HostEnvironment) -> list[str]:
        """Delete this host's taps that no live QEMU machine owns: a worker
        killed by SIGKILL took its QEMU with it (PR_SET_PDEATHSIG) but left
        its tap."""
        keep = [
            (machine.target.settings or {}).get("first_slot", 0) + machine.slot
            for machine in live_machines
            if machine.target.kind == cls.kind
        ]
        return qemu_network.cleanup_taps(keep, qemu_network.config(host))

    # -- the host ------------------------------------------------------------

    def start_host(self) -> None:
        """Boot a fresh guest; return once it printed its marker and answers
        AVAILABLE, or raise TargetFailure naming what it did instead."""
        self.stop_host()
        began = time.monotonic()
        deadline = began + self.settings["startup_timeout"]
        self._spawn()
        self._wait_for_marker(deadline)
        self.close()
        self.sent_binaries.clear()
        try:
            self.wait_until_available(max(deadline - time.monotonic(), self.settings["connect_timeout"]),
                                      after=" after its boot marker")
        except TargetFailure as failure:
            raise TargetFailure(f"{failure}{self._console_tail()}") from None
        self.boot_seconds = time.monotonic() - began
        self.log.info("guest %s ready %.1f s after QEMU started (boot %d)", self.info.address, self.boot_seconds, self.boots)

    def stop_host(self) -> None:
        """Kill QEMU's process group and delete the tap; safe at any time."""
        self.abandon()
        if self.settings["tap"]:
            qemu_network.delete_tap(self.net_slot, self.net)

    def abandon(self) -> None:
        """Kill our own QEMU but keep the tap: it is named by the slot, and the
        slot's next machine may have made it its own already."""
        self.close()
        child, self.child = self.child, None
        console, self.console = self.console, None
        if child is not None:
            _kill_group(child, console)

    def reboot(self) -> None:
        """Kill the guest and boot a fresh one (start_host kills first)."""
        self.start_host()

    def is_available(self) -> bool:
        if not self.qemu_alive():
            return False
        return super().is_available()

    def run(self, timeout: float) -> list[RawEvent]:
        """As GenodeSession.run, but a dead QEMU is named as the cause."""
        self._check_alive()
        try:
            return super().run(timeout)
        except TargetFailure as failure:
            if not self.qemu_alive():
                raise TargetFailure(f"{self._exit_description()}: {failure}{self._console_tail()}") from None
            raise

    def qemu_alive(self) -> bool:
        return self.child is not None and self.console is not None and not self.console.ended.is_set()

    # -- connections go through the namespace ------------------------------------

    def _open(self, timeout: float) -> None:
        with qemu_network.inside_namespace(self.net):
            super()._open(timeout)

    # -- QEMU ----------------------------------------------------------------

    def command(self, tap: str | None) -> list[str]:
        """QEMU's argv: serial console on stdio, no monitor, no display."""
        s = self.settings
        argv = [s["qemu"], "-M", s["machine"], "-smp", str(s["cpus"]), "-m", s["memory"],
                "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-user-config",
                "-kernel", self._image(s["kernel"], "kernel")]
        if s["cpu"]:
            argv += ["-cpu", s["cpu"]]
        if s["initrd"]:
            argv += ["-initrd", self._image(s["initrd"], "initrd")]
        if s["append"]:
            argv += ["-append", s["append"]]
        if tap:
            mac = qemu_network.mac_address(self.net_slot)
            if s["nic_onboard"]:
                argv += ["-nic", f"tap,ifname={tap},script=no,downscript=no,model={s['nic']},mac={mac}"]
            else:
                argv += ["-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
                         "-device", f"{s['nic']},netdev=net0,mac={mac}"]
        return argv + list(s["extra_args"])

    def _image(self, value: str, setting: str) -> str:
        """This host's verified copy of the uploaded boot image of that name
        (``Files.boot_image``: from the database); a host path only where the site
        allows them (DISTRIBUTOR_QEMU_HOST_IMAGES): whoever may edit a pool
        must not make QEMU read any file of the host.

        Neither found is a HostFault, not a TargetFailure: the pool names an
        image nobody uploaded (or one since removed), or a path this host
        lacks, so no guest can boot here and no slot is to blame. The host
        is probed again after the pool's health_check_every, so an upload
        (or a corrected setting) is picked up without the operator; the
        cause names the setting for them."""
        image = self.info.files.boot_image(value)
        if image is not None:
            return str(image)
        host_paths = self.info.host.settings.get("DISTRIBUTOR_QEMU_HOST_IMAGES", False)
        if host_paths and os.path.isabs(value) and os.path.isfile(value):
            return value
        raise HostFault(f"settings.{setting}: {value!r} is neither an uploaded boot image nor a host path this "
                        f"site allows (DISTRIBUTOR_QEMU_HOST_IMAGES is {'on' if host_paths else 'off'}): "
                        "upload the image or correct the pool's setting")

    def _spawn(self) -> None:
        self._check_host()
        tap = qemu_network.create_tap(self.net_slot, self.net) if self.settings["tap"] else None
        argv = self.command(tap)
        self.boots += 1
        log = _open_console(self.info.console_path, self.info.console_max_bytes)
        log.write(f"\n===== boot {self.boots} of machine {self.info.machine_id} slot {self.info.slot} at "
                  f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            self.child = pexpect.spawn(argv[0], argv[1:], echo=False, use_poll=True,
                                       preexec_fn=_child_setup(self.net))
        except pexpect.ExceptionPexpect as error:
            log.close()
            raise TargetFailure(f"cannot start {argv[0]!r}: {error}") from None
        self.console = ConsoleReader(self.child, log, self.settings["boot_marker"], self._drop_connection)
        self.console.start()
        self.log.info("QEMU pid %s started: %s", self.child.pid, shlex.join(argv))

    def _check_host(self) -> None:
        """What this host must have before a guest boots, each missing one a
        HostFault (the pool's machines go to other hosts): the QEMU binary and,
        with a tap, the DHCP server on the bridge (``manage.py network up``;
        the bridge itself is checked as the tap is made)."""
        if shutil.which(self.settings["qemu"]) is None:
            raise HostFault(f"settings.qemu: {self.settings['qemu']!r} is not installed on host "
                            f"{self.info.host.name or 'this host'} (apt-get install qemu-system-arm)")
        if self.settings["tap"] and not qemu_network.dnsmasq_running(self.net):
            raise qemu_network.NetworkError(f"no DHCP server for bridge {self.net.bridge!r} on this host: run "
                                            "`python manage.py network up` first")

    def _wait_for_marker(self, deadline: float) -> None:
        while not self.console.marker.wait(min(READ_WAKE_S, max(0.0, deadline - time.monotonic()))):
            self.info.check_stop()
            if self.console.ended.is_set():
                raise TargetFailure(f"{self._exit_description()} before its boot marker{self._console_tail()}")
            if time.monotonic() >= deadline:
                raise TargetFailure(
                    f"guest printed no boot marker /{self.settings['boot_marker']}/ within "
                    f"{self.settings['startup_timeout']:g} s (settings.startup_timeout){self._console_tail()}"
                )

    def _drop_connection(self) -> None:
        """Called by the reader when QEMU is gone: wake a waiting run()."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(2)  # SHUT_RDWR; the owner closes it
            except OSError:
                pass

    def _check_alive(self) -> None:
        if self.child is not None and not self.qemu_alive():
            raise TargetFailure(f"{self._exit_description()}{self._console_tail()}")

    def _exit_description(self) -> str:
        child = self.child
        if child is None:
            return "QEMU is not running"
        child.isalive()  # reaps it, if it is gone, so the status is known
        if child.signalstatus is not None:
            return f"QEMU (pid {child.pid}) was killed by signal {child.signalstatus}"
        if child.exitstatus is not None:
            return f"QEMU (pid {child.pid}) exited with status {child.exitstatus}"
        return f"QEMU (pid {child.pid}) closed its console"

    def _console_tail(self) -> str:
        if self.console is None or not self.console.tail:
            return ""
        return "; last console lines:\n" + "\n".join(self.console.tail)


class ConsoleReader(threading.Thread):
    """Copies QEMU's console to the console file and watches for the marker."""

    def __init__(self, child: pexpect.spawn, log, marker: str, on_end):
        super().__init__(name=f"qemu-console-{child.pid}", daemon=True)
        self.child, self.log, self.on_end = child, log, on_end
        self.pattern = re.compile(marker)
        self.marker = threading.Event()
        self.ended = threading.Event()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.partial = ""

    def run(self) -> None:
        try:
            while True:
                try:
                    data = self.child.read_nonblocking(READ_CHUNK, timeout=READ_WAKE_S)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break
                self.log.write(data)
                self.log.flush()
                self._scan(data.decode("utf-8", "replace"))
        finally:
            self.log.write(b"\n===== console closed\n")
            self.log.close()
            self.ended.set()
            self.on_end()

    def _scan(self, text: str) -> None:
        lines = (self.partial + text.replace("\r", "")).split("\n")
        self.partial = lines.pop()[-4096:]
        for line in lines:
            self.tail.append(line)
            if not self.marker.is_set() and self.pattern.search(line):
                self.marker.set()
        if not self.marker.is_set() and self.pattern.search(self.partial):
            self.marker.set()


def _open_console(path: Path | None, max_bytes: int):
    if path is None:
        return open(os.devnull, "ab")
    return RotatingConsole(path, max_bytes)


def _child_setup(cfg: qemu_network.NetworkConfig):
    """preexec_fn for QEMU: die with the machine worker (even on SIGKILL),
    and open the tap inside the network namespace."""
    parent = os.getpid()
    enter = qemu_network.enter_namespace_in_child(cfg)

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the worker died before prctl took hold
            os._exit(1)
        if enter is not None:
            enter()

    return setup


def _kill_group(child: pexpect.spawn, console: ConsoleReader | None) -> None:
    """QEMU leads its own session (pexpect's pty), so its group is its pid.
    The reader sees the console end and finishes before the pty is closed."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if console is not None:
        console.join(timeout=10)
    try:
        child.close(force=True)
    except pexpect.ExceptionPexpect:
        pass
