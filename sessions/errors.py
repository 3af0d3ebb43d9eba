"""The three ways a session's work ends other than with events.

A module of their own so that ``sessions.base`` (which re-exports them) and
``sessions.events`` can both import them at the top without importing each
other.
"""
from __future__ import annotations


class TargetFailure(Exception):
    """The target, not the task-set, went wrong: it hung, crashed, closed the
    connection, sent garbage or reported EXIT_ERROR. The machine restarts the
    target and retries the task-set; this is never a schedulability result."""


class TaskSetError(ValueError):
    """The task-set cannot run on this target as given (a binary was never
    uploaded, an admission goal has no XML form): the user's error, so the
    task-set is bad at once and the target is not restarted."""


class Stopped(Exception):
    """The machine was told to stop now (kill); raised from a wait."""


class HostFault(Exception):
    """This host cannot run the target, found before the target is contacted:
    an uploaded file it cannot fetch or verify, no bridge or DHCP set up, a
    tap the kernel refuses, no QEMU binary, a board's power command or ping
    it cannot run, a boot image the pool names that nobody uploaded. Neither
    the task-set's fault nor the target's (no slot is blamed): the task-set
    goes back to the queue untouched (no try used), the machine stops and the
    host is marked unable to run that target, whose machines go to other hosts."""
