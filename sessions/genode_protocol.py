"""The Genode task loader's wire protocol (DESIGN §5), apart from any connection.

Every integer is a uint32, little-endian. The client sends a command word,
some followed by a size and that many bytes; after START the target pushes
event messages (a size word, then NUL-terminated ASCII XML). This module
writes what goes out (the command words, the task-set description, the
admission-control goal, a binary's name field) and reads what comes back
(messages from a buffer, their events); ``sessions.genode`` owns the socket,
the waits and what the session remembers.

Two errors are the *user's*, not the target's, and are raised as ValueError
subclasses before a single byte goes out (so the target is left as it was):
``MissingBinary`` (a task names a binary nobody uploaded; retrying on another
machine cannot help, so the engine ends the task-set as bad with this message
instead of restarting the target) and ``AdmissionError`` (a job's
admission-control goal that cannot be written as XML; ``admission_xml`` lets
the upload refuse it earlier). Everything the target does wrong is a
``TargetFailure`` whose message names the cause.
"""
from __future__ import annotations

import math
import re
import struct
from xml.sax.saxutils import escape, quoteattr

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sessions.base import TASK_FIELDS, TargetFailure, TaskSetError
from sessions.events import RawEvent

AVAILABLE = 0xAAAAA
CLEAR = 0xDE6
OPTIMIZE = 0x6F7074
SEND_DESCS = 0xDE5
SEND_BINARIES = 0xDE5F11E
GO_SEND = 0x90
START = 0x514DE5
STOP = 0x514DE6
REBOOT = 0x159D3
NAME_FIELD_BYTES = 16  # 15 bytes of name + NUL
# The largest task-id and time-stamp the event log (Event) can store.
MAX_TASK_ID = 2**31 - 1
MAX_TIME_MS = 2**63 - 1
_WORD = struct.Struct("<I")
word = _WORD.pack  # one word's four bytes


def read_word(buffer: bytearray) -> int:
    """The word at the start of ``buffer`` (which holds at least four bytes)."""
    return _WORD.unpack_from(buffer)[0]


class BinaryError(TaskSetError):
    """A task's binary cannot be sent: the user's error, not the target's."""


class MissingBinary(BinaryError):
    def __init__(self, names: list[str]):
        self.names = names
        listed = ", ".join(repr(name) for name in names)
        super().__init__(f"pkg: no binary uploaded for {listed} (python manage.py binary add FILE --name NAME)")


class AdmissionError(TaskSetError):
    """The admission-control goal cannot be written as the target's XML."""


# -- what goes out ----------------------------------------------------------------


def taskset_head(description: str, goal: str = "", binaries: int = 0) -> bytes:
    """Everything before the first binary, for one write: CLEAR, the
    admission goal (OPTIMIZE) if any, the description (SEND_DESCS) and, when
    ``binaries`` follow, SEND_BINARIES with their count."""
    head = word(CLEAR)
    if goal:
        data = goal.encode("ascii")
        head += word(OPTIMIZE) + word(len(data)) + data
    data = description.encode("ascii")
    head += word(SEND_DESCS) + word(len(data)) + data
    if binaries:
        head += word(SEND_BINARIES) + word(binaries)
    return head


def binary_message(name: str, data: bytes) -> bytes:
    """One binary as sent after its GO_SEND: name field, size, bytes."""
    return name_field(name) + word(len(data)) + data


def name_field(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) >= NAME_FIELD_BYTES:
        raise BinaryError(f"pkg: binary name {name!r} is longer than {NAME_FIELD_BYTES - 1} bytes")
    return raw.ljust(NAME_FIELD_BYTES, b"\0")


def taskset_xml(tasks: list[dict]) -> str:
    """The description a Genode task loader receives (SEND_DESCS)."""
    parts = ["<taskset>"]
    for task in tasks:
        parts.append("<periodictask>")
        parts.append(f"<id>{task['id']}</id>")
        for field in TASK_FIELDS:
            if field == "arg1":
                continue
            parts.append(f"<{field}>{escape(str(task[field]))}</{field}>")
        parts.append(f"<config><arg1>{task['arg1']}</arg1></config>")
        parts.append("</periodictask>")
    parts.append("</taskset>")
    return "".join(parts)


# -- what comes back -------------------------------------------------------------


def take_events(buffer: bytearray, limit: int) -> list[RawEvent]:
    """The events of every complete message in ``buffer``, removed from it; a
    partial message stays for later. TargetFailure names what is wrong (a
    size word over ``limit`` or 0 is garbage, not a message)."""
    events: list[RawEvent] = []
    while len(buffer) >= 4:
        size = _WORD.unpack_from(buffer)[0]
        if size > limit:
            raise TargetFailure(f"message size word {size} exceeds max_message_bytes ({limit}): garbage on the wire")
        if size == 0:
            raise TargetFailure("empty event message (size word 0)")
        if len(buffer) < 4 + size:
            break
        body = bytes(buffer[4:4 + size])
        del buffer[:4 + size]
        events += parse_events(body)
    return events


# The message as the task loader writes it. A body that is exactly this (no
# DTD, no entity, no whitespace: a strict subset of well-formed XML) is read
# with one regular expression, ten times faster than the XML parser, which
# reads every other body and names what is wrong with it.
_EVENT = rb'<event task-id="(\d{1,10})" type="([A-Z_]{1,16})" time-stamp="(\d{1,19})"/>'
_CANONICAL_MESSAGE = re.compile(rb"<profile><events>(?:" + _EVENT.replace(b"(", b"(?:") + rb")*</events></profile>\0")
_CANONICAL_EVENT = re.compile(_EVENT)


def parse_events(body: bytes) -> list[RawEvent]:
    """One message body (NUL-terminated ASCII XML) as events; TargetFailure
    names what is wrong with it."""
    if _CANONICAL_MESSAGE.fullmatch(body):
        return [_checked(int(task_id), kind.decode("ascii"), int(time_ms))
                for task_id, kind, time_ms in _CANONICAL_EVENT.findall(body)]
    if not body.isascii():
        offset = next(i for i, byte in enumerate(body) if byte > 127)
        raise TargetFailure(f"non-ASCII byte 0x{body[offset]:02X} at offset {offset} of an event message: {_excerpt(body)}")
    text = body.decode("ascii")
    if not text.endswith("\0"):  # the size word was off, or the target wrote past its message
        raise TargetFailure(f"event message without its trailing NUL (the size word counts it): {_excerpt(body)}")
    text = text[:-1]
    if "\0" in text:
        raise TargetFailure(f"NUL byte inside an event message: {_excerpt(body)}")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException as error:
        raise TargetFailure(f"refused XML in an event message ({type(error).__name__})") from None
    except SafeET.ParseError as error:
        raise TargetFailure(f"malformed XML in an event message ({error}): {_excerpt(body)}") from None
    if root.tag != "profile":
        raise TargetFailure(f"unknown structure: root element <{root.tag}>, expected <profile>: {_excerpt(body)}")
    return [_event(element) for events in _children(root, "events") for element in _children(events, "event")]


def _children(parent, tag: str) -> list:
    children = list(parent)
    for child in children:
        if child.tag != tag:
            raise TargetFailure(f"unknown structure: <{child.tag}> inside <{parent.tag}>, expected <{tag}>")
    return children


def _event(element) -> RawEvent:
    try:
        task_id = int(element.attrib["task-id"])
        time_ms = int(element.attrib["time-stamp"])
        kind = element.attrib["type"]
    except KeyError as error:
        raise TargetFailure(f"unknown structure: an <event> without the attribute {error}") from None
    except ValueError:
        raise TargetFailure(f"unknown structure: non-integer task-id or time-stamp in {element.attrib}") from None
    if task_id < 0 or time_ms < 0:
        raise TargetFailure(f"negative task-id or time-stamp in {element.attrib}")
    return _checked(task_id, kind, time_ms)


def _checked(task_id: int, kind: str, time_ms: int) -> RawEvent:
    # A larger number is garbage, and storing it would fail as a database
    # error instead of naming the cause.
    if task_id > MAX_TASK_ID:
        raise TargetFailure(f"task-id {task_id} out of range (0..{MAX_TASK_ID})")
    if time_ms > MAX_TIME_MS:
        raise TargetFailure(f"time-stamp {time_ms} out of range (0..{MAX_TIME_MS} ms)")
    return RawEvent(task_id, kind, time_ms)


def _excerpt(body: bytes, size: int = 80) -> str:
    return repr(body[:size]) + ("…" if len(body) > size else "")


# -- admission control ----------------------------------------------------------

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAX_ADMISSION_DEPTH = 16


def admission_xml(admission: dict) -> str:
    """The OPTIMIZE goal, written the way the seeds wrote theirs (xmltodict).

    A job's flat goal ``{"query_interval": 1000, "strategy": "fair"}`` (what
    submissions accept) becomes ``<optimize><query_interval>1000
    </query_interval><strategy>fair</strategy></optimize>``. The seeds'
    nested form, one top-level key holding an object, names its own root:
    ``{"optimize": {"goal": {"fairness": {"apply": 1}}}}`` becomes
    ``<optimize><goal><fairness><apply>1</apply></fairness></goal></optimize>``.
    Keys starting with "@" are attributes, "#text" is the element's text, a
    list repeats its element, True/False are "true"/"false", None is an empty
    element. No ``<?xml …?>`` header (the target refuses it). Raises
    AdmissionError naming the path of the bad value.
    """
    if not isinstance(admission, dict) or not admission:
        raise AdmissionError("admission: must be a non-empty object")
    if len(admission) == 1 and isinstance(next(iter(admission.values())), dict):
        (root, value), = admission.items()
        path = f"admission.{root}"
    else:
        root, value, path = "optimize", admission, "admission"
    parts: list[str] = []
    _write_element(root, value, path, parts, 0)
    return "".join(parts)


def _write_element(name: str, value, path: str, parts: list[str], depth: int) -> None:
    if depth > MAX_ADMISSION_DEPTH:
        raise AdmissionError(f"{path}: nested more than {MAX_ADMISSION_DEPTH} levels deep")
    _check_name(name, path)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _write_element(name, item, f"{path}[{index}]", parts, depth + 1)
        return
    if not isinstance(value, dict):
        parts.append(f"<{name}>{escape(_scalar(value, path))}</{name}>")
        return
    attributes, text, children = "", "", []
    for key, item in value.items():
        if not isinstance(key, str):
            raise AdmissionError(f"{path}: key {key!r} is not a string")
        if key == "#text":
            text = escape(_scalar(item, f"{path}.#text"))
        elif key.startswith("@"):
            _check_name(key[1:], f"{path}.{key}")
            attributes += f" {key[1:]}={quoteattr(_scalar(item, f'{path}.{key}'))}"
        else:
            children.append((key, item))
    parts.append(f"<{name}{attributes}>{text}")
    for key, item in children:
        _write_element(key, item, f"{path}.{key}", parts, depth + 1)
    parts.append(f"</{name}>")


def _check_name(name: str, path: str) -> None:
    if not _XML_NAME.fullmatch(name) or name.lower().startswith("xml"):
        raise AdmissionError(f"{path}: {name!r} is not a usable XML name (letters, digits, '_', '.', '-')")


def _scalar(value, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AdmissionError(f"{path}: {value} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if not value.isascii() or any(ord(char) < 32 and char not in "\t\n\r" for char in value):
            raise AdmissionError(f"{path}: printable ASCII text only (the target reads ASCII)")
        return value
    raise AdmissionError(f"{path}: a {type(value).__name__} cannot be written as XML text")
