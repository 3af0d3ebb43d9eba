"""Starting and stopping the two django-q2 clusters as child processes.

``serve`` and ``workers`` run the default cluster (control tasks and the
reconciler's schedule) and this host's machines cluster (one worker per
machine) as children, and stop them together. Stopping first tells this
host's machines to stop now, so their task-sets go back to the queue
untouched and their targets are taken down by their own machines.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from django.conf import settings

from distributor.environment import host_environment
from distributor.models import Machine
from distributor.reconciler import ensure_schedule, tick
from sessions import SESSION_KINDS

log = logging.getLogger("distributor")


def start_clusters() -> list[subprocess.Popen]:
    """Each cluster in a process group of its own: Ctrl-C reaches only the
    command, which stops the clusters in order; if the command itself dies,
    its clusters are told to stop (SIGTERM on parent death)."""
    manage = str(settings.BASE_DIR / "manage.py")
    return [
        subprocess.Popen([sys.executable, manage, command], env=_env(cluster), start_new_session=True,
                         preexec_fn=_stop_with_parent)
        for command, cluster in (("qcluster", None), ("hostcluster", settings.MACHINES_CLUSTER))
    ]


def _stop_with_parent() -> None:
    from sessions.base import die_with_parent

    die_with_parent(signal.SIGTERM)


def _env(cluster: str | None) -> dict:
    env = dict(os.environ)
    env.pop("Q_CLUSTER_NAME", None)
    if cluster:
        env["Q_CLUSTER_NAME"] = cluster
    return env


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


def stop_clusters(children: list[subprocess.Popen], grace: float = 15.0) -> None:
    here = Machine.objects.filter(host=settings.DISTRIBUTOR_HOST)
    Machine.cancel_launches(here, "host stopped before start")
    Machine.order(here, Machine.StopMode.KILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Machine.objects.filter(
        host=settings.DISTRIBUTOR_HOST, state__in=Machine.LIVE_STATES
    ).exists():
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 5))
        except subprocess.TimeoutExpired:
            pass
        _kill_group(child)


def _kill_group(child: subprocess.Popen) -> None:
    """Whatever of a cluster is still there (a stuck worker) is killed."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def wait_any(children: list[subprocess.Popen]) -> None:
    """Block until a child exits (a crashed cluster stops the whole command)."""
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    for child in children:
        if child.returncode is not None:
            log.error("cluster process %s exited with %s", child.pid, child.returncode)
