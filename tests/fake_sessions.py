"""A scripted session kind for engine tests, loaded in cluster processes
through DISTRIBUTOR_SESSION_MODULES=tests.fake_sessions.

It behaves like a target that takes ``duration_ms`` per task-set and reports
every job as the stdio kind does; a task whose pkg is ``crash`` makes the
target fail (TargetFailure), ``hang`` makes it go silent, and ``nobinary``
is a task-set the target cannot run at all (TaskSetError). The slots in
``broken_slots`` fail every task-set (a broken board).
"""
from __future__ import annotations

import subprocess
import time

from sessions import register
from sessions.base import HostFault, Session, TargetFailure, TaskSetError, die_with_parent
from sessions.stdio import _placeholder_events


@register
class ScriptedSession(Session):
    kind = "scripted"
    default_settings = {"duration_ms": 0, "boot_ms": 0, "process": "", "broken_slots": [], "unusable_on": ""}
    boots: list[int] = []
    reboots: list[int] = []  # machine ids, one per reboot
    taken_down: list[int] = []  # machine ids, one per stop_host (a power-off, a tap deleted)
    abandoned: list[int] = []  # machine ids, one per abandon (a fenced machine's own child killed)

    def __init__(self, info):
        """``unusable_on`` names a host this kind cannot even be set up on
        (a network configuration it cannot compute there)."""
        super().__init__(info)
        if self.settings["unusable_on"] and self.settings["unusable_on"] == self.info.host.name:
            raise HostFault(f"scripted: cannot be set up on host {self.info.host.name}")

    def start_host(self) -> None:
        """With ``process`` set, the target is a real child process (``sleep``
        with that marker) that must never outlive its machine."""
        self.info.stop_event.wait(self.settings["boot_ms"] / 1000)
        if self.settings["process"]:
            self.child = subprocess.Popen(["sleep", f"{1000}.{self.settings['process']}"], preexec_fn=die_with_parent)
        ScriptedSession.boots.append(self.info.machine_id)

    def stop_host(self) -> None:
        ScriptedSession.taken_down.append(self.info.machine_id)
        self._kill_child()

    def abandon(self) -> None:
        ScriptedSession.abandoned.append(self.info.machine_id)
        self._kill_child()

    def _kill_child(self) -> None:
        child = getattr(self, "child", None)
        if child is not None:
            child.kill()
            child.wait()
            self.child = None

    def reboot(self) -> None:
        ScriptedSession.reboots.append(self.info.machine_id)

    def start(self, tasks, admission=None):
        if self.info.slot in self.settings["broken_slots"]:
            raise TargetFailure(f"scripted target of slot {self.info.slot} is broken")
        pkgs = {task["pkg"] for task in tasks}
        if "nobinary" in pkgs:
            raise TaskSetError("pkg: no binary uploaded for 'nobinary'")
        if "crash" in pkgs:
            raise TargetFailure("scripted target crashed on a 'crash' task")
        self.silent = "hang" in pkgs
        self.events = [event for task in tasks for event in _placeholder_events(task)]
        self.ready_at = time.monotonic() + self.settings["duration_ms"] / 1000

    def run(self, timeout):
        if self.silent:
            self.info.stop_event.wait(timeout)
            return []
        wait = self.ready_at - time.monotonic()
        if wait > 0:
            self.info.stop_event.wait(min(wait, timeout))
            self.info.check_stop()
            if time.monotonic() < self.ready_at:
                return []
        events, self.events = self.events, []
        return events
