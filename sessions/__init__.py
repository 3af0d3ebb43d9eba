"""Sessions: the code that talks to one kind of target.

One base class (``sessions.base.Session``), one module per kind, and this
registry keyed by kind. A target pool names its kind; a machine builds the
session of that kind for its slot.
"""
from __future__ import annotations

from sessions.base import HostFault, Session, SessionInfo, Stopped, TargetFailure, TaskSetError
from sessions.events import EventTracker, RawEvent

SESSION_KINDS: dict[str, type[Session]] = {}


def register(cls: type[Session]) -> type[Session]:
    SESSION_KINDS[cls.kind] = cls
    return cls


def get_session_class(kind: str) -> type[Session]:
    try:
        return SESSION_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown target kind {kind!r}; known: {', '.join(sorted(SESSION_KINDS))}") from None


# Importing a kind's module registers it.
from sessions import board, genode, simso, qemu, stdio  # noqa: E402,F401

__all__ = ["EventTracker", "HostFault", "RawEvent", "SESSION_KINDS", "Session", "SessionInfo", "Stopped", "TargetFailure",
           "TaskSetError",
           "get_session_class", "register"]
