"""A dry run: print the exact XML a Genode target would receive.

The task-set "finishes" at once: every job is reported as starting and ending
at its release (offset + k·period, or back to back at the offset), so the
engine, the database and the exports can be exercised without any target.
Its results are placeholders, not measurements.
"""
from __future__ import annotations

import sys

from sessions import register
from sessions.base import Session, boolean_setting
from sessions.events import RawEvent
from sessions.genode_protocol import taskset_xml


@register
class StdioSession(Session):
    kind = "stdio"
    default_settings = {"print": True}
    setting_rules = {"print": boolean_setting}

    def start(self, tasks: list[dict], admission: dict | None = None) -> None:
        if self.settings["print"]:
            sys.stdout.write(f"machine {self.info.machine_id}: {taskset_xml(tasks)}\n")
            sys.stdout.flush()
        self.pending = [event for task in tasks for event in _placeholder_events(task)]

    def run(self, timeout: float) -> list[RawEvent]:
        events, self.pending = self.pending, []
        return events


def _placeholder_events(task: dict) -> list[RawEvent]:
    events = []
    for number in range(task["numberofjobs"]):
        at = task["offset"] + number * task["period"]
        events += [RawEvent(task["id"], "START", at), RawEvent(task["id"], "EXIT", at)]
    last = events[-1].time_ms
    events.append(RawEvent(task["id"], "JOBS_DONE", last))
    return events
