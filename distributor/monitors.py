"""Monitors: the seeds' hooks around a task-set's life.

A machine calls every monitor of a job at task-set start, for each batch of
events, at finish, when it stops a task-set unfinished (a kill puts it back, a
cancel-now ends it cancelled) and when a
task-set turns bad. Storing into the database is not a monitor's job here —
the machine does that itself, exactly once, under a compare-and-set — so a
monitor is for observing: logging, notifying, feeding another system. A
monitor that raises is logged and ignored; it never stops a machine.

Monitors are found by name in ``settings.DISTRIBUTOR_MONITORS`` (name →
dotted path of a ``Monitor`` subclass), so a site adds its own without
touching this file; a job names the ones it wants (``submit --monitor NAME``).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from functools import lru_cache
from logging.handlers import RotatingFileHandler

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


class Monitor:
    name = ""

    def taskset_start(self, taskset, tasks: list[dict]) -> None:
        pass

    def taskset_event(self, taskset, events: list) -> None:
        pass

    def taskset_finish(self, taskset) -> None:
        pass

    def taskset_stop(self, taskset) -> None:
        pass

    def taskset_bad(self, taskset) -> None:
        pass


class LoggingMonitor(Monitor):
    """Writes every hook to LOG_DIR/monitor.log, as the seeds' LoggingMonitor did."""

    name = "logging"

    def __init__(self) -> None:
        self.log = logging.getLogger("distributor.monitor")
        if not any(getattr(h, "monitor_file", False) for h in self.log.handlers):
            handler = RotatingFileHandler(settings.LOG_DIR / "monitor.log", maxBytes=10 * 2**20, backupCount=3)
            handler.monitor_file = True
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(handler)
            self.log.setLevel(logging.INFO)

    def taskset_start(self, taskset, tasks):
        self.log.info("start %s: %d tasks", taskset, len(tasks))

    def taskset_event(self, taskset, events):
        for event in events:
            self.log.info("event %s: task %d %s at %d ms", taskset, event.task_id, event.type, event.time_ms)

    def taskset_finish(self, taskset):
        self.log.info("finish %s: %s", taskset, taskset.outcome)

    def taskset_stop(self, taskset):
        self.log.info("stop %s: %s", taskset, "cancelled" if taskset.state == "cancelled" else "put back in the queue")

    def taskset_bad(self, taskset):
        self.log.info("bad %s: %s", taskset, taskset.last_error)


DEFAULT_MONITORS = {"logging": "distributor.monitors.LoggingMonitor"}


class _Registry(Mapping):
    """Monitor classes by name, from ``settings.DISTRIBUTOR_MONITORS`` as it
    stands when asked (so an override in a test applies); each dotted path
    is imported once."""

    def _classes(self) -> dict[str, type[Monitor]]:
        paths = getattr(settings, "DISTRIBUTOR_MONITORS", DEFAULT_MONITORS)
        return _load(tuple(sorted(paths.items())))

    def __getitem__(self, name: str) -> type[Monitor]:
        return self._classes()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes())

    def __len__(self) -> int:
        return len(self._classes())


@lru_cache(maxsize=8)
def _load(paths: tuple[tuple[str, str], ...]) -> dict[str, type[Monitor]]:
    classes = {}
    for name, path in paths:
        try:
            found = import_string(path)
        except ImportError as error:
            raise ImproperlyConfigured(f"DISTRIBUTOR_MONITORS[{name!r}]: cannot import {path!r}: {error}") from None
        if not (isinstance(found, type) and issubclass(found, Monitor)):
            raise ImproperlyConfigured(f"DISTRIBUTOR_MONITORS[{name!r}]: {path!r} is not a Monitor subclass")
        classes[name] = found
    return classes


MONITORS: Mapping[str, type[Monitor]] = _Registry()


class MonitorGroup:
    """Calls each monitor's hook and keeps a failing monitor from hurting the machine."""

    def __init__(self, names: list[str], log: logging.Logger):
        self.monitors = [MONITORS[name]() for name in names if name in MONITORS]
        self.log = log

    def __getattr__(self, hook: str):
        def call(*args) -> None:
            for monitor in self.monitors:
                try:
                    getattr(monitor, hook)(*args)
                except Exception:  # noqa: BLE001 - a monitor must not stop a machine
                    self.log.exception("monitor %s failed in %s", monitor.name, hook)

        return call
