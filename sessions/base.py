"""The session life cycle every target kind implements.

The seeds' AbstractSession had ``is_available``, ``start``, ``run``,
``is_running``, ``stop`` and ``close``; to these we add the host's own life
cycle (``start_host`` boots a QEMU guest or powers on a board and returns when
the target answers; ``stop_host`` kills or powers it off and is safe to call
at any time). Whether a task-set has finished is decided from its events by
``sessions.events.EventTracker``, the same way for every kind.
"""
from __future__ import annotations

import ctypes
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Callable, NamedTuple, Protocol

from sessions.errors import HostFault, Stopped, TargetFailure, TaskSetError  # noqa: F401 - every kind raises them from here
from sessions.events import RawEvent
from sessions.etm import EtmError, ExecutionTimeModel


# Looked up once, here: a forked child calls it without loading anything
# (a dlopen right after fork can hang on a lock another thread held).
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """``preexec_fn`` for a target's process (QEMU, a helper): the kernel sends
    ``sig`` when the thread that started it dies, even by SIGKILL, so no target
    outlives its machine. Linux only (prctl PR_SET_PDEATHSIG)."""
    _prctl(PR_SET_PDEATHSIG, sig)


def cannot_run(error: OSError) -> str:
    """Why this host cannot run a command a pool names, for its HostFault."""
    return "is not installed" if isinstance(error, FileNotFoundError) else "is not executable"


# A task as every kind receives it (``Session.start``): its "id" and these
# fields, in this order, which is also the order of a Genode description's
# elements and of a task-set file's varying fields (distributor.taskfile).
TASK_FIELDS = ("pkg", "arg1", "priority", "deadline", "period", "offset", "numberofjobs",
               "criticaltime", "quota", "caps", "cores", "coreoffset")

# A setting's check: None when the value is good, else what is wrong with it.
SettingRule = Callable[[object], str | None]


def seconds_setting(lo: float, hi: float) -> SettingRule:
    """A number of seconds from ``lo`` to ``hi`` (a bool is not a number here)."""
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            return f"must be a number of seconds from {lo:g} to {hi:g}"
        return None
    return check


def integer_setting(lo: int, hi: int) -> SettingRule:
    """An integer from ``lo`` to ``hi``."""
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"must be an integer from {lo} to {hi}"
        return None
    return check


def boolean_setting(value) -> str | None:
    """true or false, never 0 / 1 or a string."""
    return None if isinstance(value, bool) else "must be true or false"


class StoredFile(NamedTuple):
    """An uploaded file as a session receives it; its bytes match its checksum."""

    name: str
    sha256: str
    data: bytes


class Files(Protocol):
    """The uploaded files a session may need, provided by the distributor
    (``distributor.files``): sessions/ reads no database."""

    def checksums(self, names: Sequence[str]) -> dict[str, str]:
        """sha256 by name of the uploaded binaries among ``names``; an unknown
        name is absent. Asked before every task-set, so it must be cheap."""

    def binaries(self, names: Sequence[str]) -> dict[str, StoredFile]:
        """The binaries among ``names`` with their bytes, verified against their
        checksums (one deleted since is absent); HostFault names one this host
        cannot get or verify."""

    def boot_image(self, name: str) -> Path | None:
        """A local copy of the uploaded boot image ``name`` (verified against its
        checksum); None if there is none; HostFault when this host cannot get it."""


class NoFiles:
    """The files of a session given none (a test's, a bench's): none uploaded."""

    def checksums(self, names: Sequence[str]) -> dict[str, str]:
        return {}

    def binaries(self, names: Sequence[str]) -> dict[str, StoredFile]:
        return {}

    def boot_image(self, name: str) -> Path | None:
        return None


@dataclass(frozen=True)
class HostEnvironment:
    """What a kind may know of the host it runs on. The distributor builds it
    from its Django settings (``distributor.environment``); sessions/ reads
    no settings of its own."""

    name: str = ""  # this host (DISTRIBUTOR_HOST): taps and consoles are per host
    data_dir: Path = Path("data")  # where a kind keeps its state (DATA_DIR)
    # The site's settings by name (DISTRIBUTOR_BRIDGE, …), for the kinds that read them.
    settings: Mapping[str, object] = field(default_factory=dict)


@dataclass
class SessionInfo:
    """What a session knows about the machine that owns it."""

    machine_id: int
    slot: int
    address: str
    settings: dict
    log: logging.Logger
    console_path: Path | None = None
    # The console file is rotated past this size (sessions.console), keeping three older ones.
    console_max_bytes: int = 10 * 2**20
    # Set when the machine must stop now; long waits poll it.
    stop_event: threading.Event = field(default_factory=threading.Event)
    # Seconds of target silence after which a task-set is a target failure.
    target_timeout: float = 40.0
    # Uploaded binaries and boot images.
    files: Files = field(default_factory=NoFiles)
    # The host the machine runs on.
    host: HostEnvironment = field(default_factory=HostEnvironment)

    def check_stop(self) -> None:
        if self.stop_event.is_set():
            raise Stopped("the machine was told to stop")


def etm_setting(value: object) -> str | None:
    """Every kind's ``etm``: the name of a stored execution-time model (the
    distributor checks that it exists and hands the session the model
    itself, a dict, which SimSo simulates with); None when acceptable."""
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, dict):
        try:
            ExecutionTimeModel.from_dict(value)
        except EtmError as error:
            return str(error)
        return None
    return "must name a stored execution-time model (manage.py etm list)"


# Settings every kind accepts beside its own, with their rules.
COMMON_SETTINGS: dict[str, SettingRule] = {"etm": etm_setting}


class Session:
    kind: str = ""
    # Settings the kind accepts, with their defaults (shown by `target list`).
    default_settings: dict = {}
    # Checks of the settings' values by name (``seconds_setting`` and the like).
    setting_rules: dict[str, SettingRule] = {}
    # The uploads the kind uses, so that a job can name the very content it
    # runs (``distributor.models.JobContent``): the binaries of its tasks' pkgs,
    # and the boot images its pool's settings name.
    sends_binaries: bool = False
    boot_image_settings: tuple[str, ...] = ()

    def __init__(self, info: SessionInfo):
        self.info = info
        self.settings = {**self.default_settings, **(info.settings or {})}
        self.log = info.log

    # -- the pool ------------------------------------------------------------

    @classmethod
    def check_settings(cls, settings: dict, addresses: list[str]) -> dict[str, str]:
        """Errors by field name ("settings.x": message); empty when valid."""
        errors = {}
        for key in settings:
            if key not in cls.default_settings and key not in COMMON_SETTINGS:
                known = ", ".join(sorted({*cls.default_settings, *COMMON_SETTINGS}))
                errors[f"settings.{key}"] = f"unknown setting for kind {cls.kind!r} (known: {known})"
        for key, value in settings.items():
            rule = cls.setting_rules.get(key) or COMMON_SETTINGS.get(key)
            message = rule(value) if rule else None
            if message:
                errors[f"settings.{key}"] = message
        return errors

    @classmethod
    def capacity(cls, target, host: HostEnvironment) -> int | None:
        """Machine slots of a pool (a Target row) without addresses on
        ``host``; None = only the cap."""
        return None

    @classmethod
    def reap(cls, machine, host: HostEnvironment) -> None:
        """Clean up after a machine (a Machine row) declared dead, e.g. delete
        its tap device.

        Runs in the reconciler on ``host``, possibly another host than the
        dead machine's; it must be idempotent and must not assume the process
        is gone.
        """

    @classmethod
    def clean_up_host(cls, live_machines: Sequence, host: HostEnvironment) -> list[str]:
        """Remove what this kind's machines left on ``host`` when they died
        with it (a QEMU's tap), keeping what ``live_machines`` (the host's live
        Machine rows, of every kind) still use; returns what was removed.

        Runs when the host's clusters start, before any machine of theirs.
        """
        return []

    # -- the host ------------------------------------------------------------

    def start_host(self) -> None:
        """Bring the target up and return when it answers (or raise TargetFailure)."""

    def stop_host(self) -> None:
        """Take the target down; idempotent, never raises for an absent target."""

    def abandon(self) -> None:
        """The machine lost its lease: release only what is this process's own
        (connections, a child process) and leave the slot's shared parts (a
        tap, a board's power) to the slot's next machine, which may already use
        them; the reconciler's ``reap`` cleans up after the dead. Never raises
        for an absent target."""
        self.close()

    def reboot(self) -> None:
        """Reboot the target between two task-sets and return when it answers
        again (or raise TargetFailure). A kind with nothing to reboot (a
        simulation, a local process) does nothing."""

    # -- one task-set --------------------------------------------------------

    def is_available(self) -> bool:
        return True

    def start(self, tasks: list[dict], admission: dict | None = None) -> None:
        """Send a task-set (each task a dict of "id" and TASK_FIELDS) and start it."""
        raise NotImplementedError

    def run(self, timeout: float) -> list[RawEvent]:
        """Wait at most ``timeout`` seconds and return the events that arrived."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the running task-set (STOP); the target stays up."""

    def close(self) -> None:
        """Release connections; the host stays up."""
