"""The launcher (``serve``, ``workers``) and the clusters it owns.

The launcher runs the default (control) cluster (``manage.py controlcluster``:
control tasks and the reconciler's schedule) and this host's machines cluster
(``manage.py hostcluster``: one worker per machine) as children, each in a
session of its own, so a terminal's Ctrl-C or a signal to the launcher's
process group reaches the launcher alone, which stops them in order.

How everything stops:

- SIGTERM or SIGINT to the launcher (a second one: kill) — its handlers are
  installed here whatever it inherited, so a launcher started with SIGINT
  ignored (``nohup``, a script's background job) stops on SIGINT too. It
  forwards the stop to its clusters and waits; what is left after the grace
  period (plus ``KILL_SECONDS`` and ``CLUSTER_STOP_SECONDS``) is killed.
- The machines cluster stops taking machines (it beats with capacity 0),
  then drains its machines (each finishes its task-set) or, with
  ``--stop kill``, kills them (their task-sets go back to the queue
  untouched); a drain still running after the grace period becomes a kill.
  Then it stops its django-q2 cluster and silences the host.
- A cluster whose launcher is gone (kill -9, the OOM killer) gets SIGHUP from
  the kernel (PR_SET_PDEATHSIG), with a watchdog on ``os.getppid()`` behind
  it, and stops as on a kill: a restarted launcher never runs beside orphans.
  Inside a cluster every forked process (sentinel, workers) is killed when
  the process that forked it dies.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.db import connections

from distributor.environment import host_environment
from distributor.models import Machine
from distributor.reconciler import ensure_schedule, tick
from sessions import SESSION_KINDS
from sessions.base import die_with_parent

log = logging.getLogger("distributor")

STOP_MODES = ("drain", "kill")
DEFAULT_GRACE_SECONDS = 60.0
KILL_SECONDS = 10.0  # a killed machine puts its task-set back and takes its target down within this
CLUSTER_STOP_SECONDS = 10.0  # a cluster with no machine left stops its workers within this
LAUNCHER_ENV = "DISTRIBUTOR_LAUNCHER_PID"  # set for the clusters a launcher starts
POLL_SECONDS = 0.2


def stop_budget(grace: float) -> float:
    """The longest a launcher takes to stop: systemd's TimeoutStopSec must be more."""
    return grace + KILL_SECONDS + CLUSTER_STOP_SECONDS


class StopSignals:
    """The stop a process was asked for, from its signal handlers.

    SIGTERM and SIGINT ask for a stop in the command's mode, a second one
    turns it into a kill; SIGHUP (or a launcher gone) asks for a kill. The
    handlers only note it: the main loop acts on it."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requested = 0

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.request(kill=signum == signal.SIGHUP or self.requested > 0)

    def request(self, kill: bool = False) -> None:
        if kill:
            self.mode = "kill"
        self.requested += 1

    @property
    def kill(self) -> bool:
        return self.mode == "kill"


# -- the launcher ---------------------------------------------------------------


class Launcher:
    """What ``serve`` and ``workers`` share: start the clusters, wait, stop them."""

    def __init__(self, stop_mode: str = "drain", grace: float = DEFAULT_GRACE_SECONDS):
        self.signals = StopSignals(stop_mode)
        self.grace = grace
        self.children: list[subprocess.Popen] = []

    def start(self) -> None:
        self.signals.install()
        prepare()
        if not self.signals.requested:
            self.children = start_clusters(self.signals.mode, self.grace)

    def wait(self, *others: threading.Thread) -> str | None:
        """Until a stop is asked (None) or a cluster or thread ends (what ended)."""
        while not self.signals.requested:
            for child in self.children:
                if child.poll() is not None:
                    return f"cluster process {child.pid} ({child.args[2]}) exited with {child.returncode}"
            for thread in others:
                if not thread.is_alive():
                    return f"the {thread.name} thread ended"
            time.sleep(POLL_SECONDS)
        return None

    def describe_stop(self) -> str:
        if self.signals.kill:
            return "machines killed, their task-sets back in the queue"
        return f"machines finish their task-sets (at most {self.grace:g} s; a second Ctrl-C kills them)"

    def stop(self) -> None:
        """Forward the stop (a kill as SIGHUP) and wait; kill what is left."""
        told: dict[int, str | None] = {child.pid: None for child in self.children}  # the mode each was told
        deadline = time.monotonic() + stop_budget(self.grace)
        while time.monotonic() < deadline and any(child.poll() is None for child in self.children):
            for child in self.children:
                if child.poll() is None and told[child.pid] != self.signals.mode:
                    child.send_signal(signal.SIGHUP if self.signals.kill else signal.SIGTERM)
                    told[child.pid] = self.signals.mode
            time.sleep(POLL_SECONDS)
        for child in self.children:
            _kill_group(child)


def start_clusters(stop_mode: str = "drain", grace: float = DEFAULT_GRACE_SECONDS) -> list[subprocess.Popen]:
    """Each cluster in a session of its own; each makes sure itself that it
    dies with this process (no ``preexec_fn``: the web server's threads run)."""
    manage = str(settings.BASE_DIR / "manage.py")
    options = ["--stop", stop_mode, "--grace", f"{grace:g}"]
    return [
        subprocess.Popen([sys.executable, manage, command, *options], env=_env(cluster), start_new_session=True)
        for command, cluster in (("controlcluster", None), ("hostcluster", settings.MACHINES_CLUSTER))
    ]


def _env(cluster: str | None) -> dict:
    env = dict(os.environ)
    env.pop("Q_CLUSTER_NAME", None)
    if cluster:
        env["Q_CLUSTER_NAME"] = cluster
    env[LAUNCHER_ENV] = str(os.getpid())
    return env


def _kill_group(child: subprocess.Popen) -> None:
    """Whatever of a cluster is still there (a stuck worker, a target's process) is killed."""
    if child.poll() is None:
        log.warning("cluster process %s did not stop in time: killed", child.pid)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def prepare() -> None:
    """The reconciler's schedule exists and machines left from a crash are handled."""
    ensure_schedule()
    _clean_up_host()
    tick()


def _clean_up_host() -> None:
    """What machines this host ran before a crash left behind (a QEMU's tap):
    every kind is asked, keeping what the host's live machines use."""
    live = list(Machine.objects.filter(host=settings.DISTRIBUTOR_HOST, state__in=Machine.LIVE_STATES)
                .select_related("target"))
    host = host_environment()
    for kind, session_class in sorted(SESSION_KINDS.items()):
        try:
            removed = session_class.clean_up_host(live, host)
        except Exception:  # noqa: BLE001 - e.g. no network set up on this host is fine
            log.debug("%s: nothing cleaned up", kind, exc_info=True)
            continue
        if removed:
            log.info("%s: deleted what dead machines left: %s", kind, ", ".join(removed))


# -- a cluster the launcher owns --------------------------------------------------


class OwnedCluster:
    """One django-q2 cluster in this process, stopped by its signals or when
    the launcher that started it is gone."""

    def __init__(self, stop_mode: str = "drain", grace: float = DEFAULT_GRACE_SECONDS):
        self.signals = StopSignals(stop_mode)
        self.grace = grace
        self.cluster = None

    def start(self):
        from django_q.cluster import Cluster

        self._die_with_launcher()
        # The sentinel and its workers die with the process that forked them.
        os.register_at_fork(after_in_child=die_with_parent)
        self.cluster = Cluster()  # installs django-q2's handlers, which would wait for every machine…
        self.signals.install()  # …so ours replace them: the stop is ours to run
        connections.close_all()  # the cluster forks: no connection may be shared
        self.cluster.start()
        return self.cluster

    def _die_with_launcher(self) -> None:
        launcher = os.environ.get(LAUNCHER_ENV)
        if not launcher:
            return  # started by hand: it lives until it is told to stop
        die_with_parent(signal.SIGHUP)
        threading.Thread(target=self._watch, args=(int(launcher),), name="launcher-watch", daemon=True).start()

    def _watch(self, launcher: int) -> None:
        """The fallback of the parent-death signal (a launcher gone before it was set)."""
        while os.getppid() == launcher:
            time.sleep(1.0)
        log.warning("the launcher (pid %s) is gone: stopping", launcher)
        self.signals.request(kill=True)

    def alive(self) -> bool:
        return self.cluster.sentinel.is_alive()

    def wait(self) -> bool:
        """Until a stop is asked (True) or the cluster ended by itself (False)."""
        while not self.signals.requested:
            if not self.alive():
                return False
            time.sleep(POLL_SECONDS)
        return True

    def stop(self, timeout: float = CLUSTER_STOP_SECONDS) -> None:
        """The sentinel stops its workers; whatever is left after ``timeout`` is killed."""
        if not self.alive():
            return
        self.cluster.stop_event.set()
        self.cluster.sentinel.join(timeout)
        if self.alive():
            log.warning("cluster did not stop in time: its processes are killed")
            kill_descendants(os.getpid())
            self.cluster.sentinel.join()


def stop_machines(signals: StopSignals, grace: float) -> bool:
    """This host's machines drain (each finishes its task-set) or, in kill
    mode, stop now (their task-sets back in the queue untouched); a drain
    longer than ``grace`` becomes a kill. True when none is left running."""
    here = Machine.objects.filter(host=settings.DISTRIBUTOR_HOST)
    deadline, killing = time.monotonic() + grace, False
    while True:
        if not killing and (signals.kill or time.monotonic() >= deadline):
            if not signals.kill:
                log.warning("machines still busy after %g s: killed, their task-sets go back to the queue", grace)
            killing, deadline = True, time.monotonic() + KILL_SECONDS
        Machine.cancel_launches(here, "host stopped before start")
        if killing:
            Machine.order(here, Machine.StopMode.KILL)
        else:
            Machine.order(here.filter(stop_mode=Machine.StopMode.NONE), Machine.StopMode.DRAIN)
        if not here.filter(state__in=Machine.LIVE_STATES).exists():
            return True
        if killing and time.monotonic() >= deadline:
            log.error("machines still live %g s after the kill: the reconciler will declare them dead", KILL_SECONDS)
            return False
        time.sleep(POLL_SECONDS)


def kill_descendants(root: int) -> list[int]:
    """SIGKILL to every process below ``root`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found
