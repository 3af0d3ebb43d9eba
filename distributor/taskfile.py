"""Task-set files (DESIGN §4): parse, validate, count and expand variants.

A file is JSON, YAML of the same structure, or the Genode XML form. Parsing
returns a *spec*: the file with defaults filled in and every varying value in
one of three shapes, ``{"list": [...]}``, ``{"range": [start, stop, step]}`` or
``{"random": [lo, hi]}``. Variants are never materialised: variant *i* is
decoded from its index (mixed radix over the varying fields, the last varying
field fastest), so a job of 10^9 variants costs as much as one of ten.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import yaml
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

# A task's fields are the sessions' (which receive tasks in this form), and so
# is the Genode description of a task-set; both stay importable from here.
from sessions.base import TASK_FIELDS
from sessions.genode_protocol import taskset_xml  # noqa: F401

UINT32_MAX = 2**32 - 1
# PostgreSQL's integer, the column of caps (a PositiveIntegerField).
INT32_MAX = 2**31 - 1
MAX_VARIANTS = 10**15
MAX_TASKSETS = 10_000
MAX_TASKS = 64
MAX_LIST = 100_000
PKG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
QUOTA = re.compile(r"^[1-9][0-9]{0,12}[KMG]?$")
QUOTA_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}
# 1 TiB: more RAM than any target has, and quota_bytes stays far inside the
# exports' 64-bit integers (a 13-digit "G" quota would not).
QUOTA_MAX_BYTES = 2**40
# Nesting of any JSON or YAML a user sends (a file, an admission goal, a
# target's settings, an API body): a file is 4 deep, settings 2; 100,000 deep
# used to end in a RecursionError (a 500) wherever it was read.
MAX_DEPTH = 32
# Control characters and unpaired surrogates: neither PostgreSQL text nor
# jsonb can hold a NUL or a lone surrogate, and no name needs them.
UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

# field: (minimum, maximum, default). Times are ms. Defaults follow the seeds'
# task model, except quota and caps: the seeds' zeros crashed the target.
INT_FIELDS: dict[str, tuple[int, int, int]] = {
    "arg1": (0, UINT32_MAX, 0),
    "priority": (0, 128, 127),
    "deadline": (0, UINT32_MAX, 0),
    "period": (0, UINT32_MAX, 0),
    "offset": (0, UINT32_MAX, 0),
    "numberofjobs": (1, 1_000_000, 1),
    "criticaltime": (0, UINT32_MAX, 0),
    "caps": (1, INT32_MAX, 235),  # its column is a 32-bit signed integer on PostgreSQL
    "cores": (1, 256, 1),
    "coreoffset": (0, 255, 0),
}
DEFAULT_QUOTA = "100M"
FILE_KEYS = {"name", "seed", "tasksets"}
TASKSET_KEYS = {"tasks"}
TASK_KEYS = (set(TASK_FIELDS) - {"arg1"}) | {"config"}
CONFIG_KEYS = {"arg1"}


class TaskFileError(ValueError):
    """Every problem of a file, each with the path of the value at fault."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{path}: {message}" for path, message in errors))

    def as_dict(self) -> dict[str, str]:
        return {path: message for path, message in self.errors}


@dataclass(frozen=True)
class ParsedFile:
    spec: dict
    variant_count: int
    format: str


# -- reading ------------------------------------------------------------------


def parse(data: bytes | str, filename: str = "", max_bytes: int | None = None) -> ParsedFile:
    """Read, validate and normalise a task-set file; raise TaskFileError."""
    if max_bytes is None:
        from django.conf import settings

        max_bytes = settings.TASKSET_FILE_MAX_BYTES
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise TaskFileError([("file", f"is {len(raw)} bytes; the limit is {max_bytes} bytes")])
    if not raw.strip():
        raise TaskFileError([("file", "is empty")])
    kind = _detect_format(raw, filename)
    document = {"json": _read_json, "yaml": _read_yaml, "xml": _read_xml}[kind](raw)
    spec = _validate(document)
    return ParsedFile(spec=spec, variant_count=variant_count(spec), format=kind)


def _detect_format(raw: bytes, filename: str) -> str:
    lowered = filename.lower()
    if lowered.endswith(".xml"):
        return "xml"
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    if lowered.endswith(".json"):
        return "json"
    first = raw.lstrip()[:1]
    if first == b"<":
        return "xml"
    if first in (b"{", b"["):
        return "json"
    return "yaml"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TaskFileError([("file", f"is not UTF-8 text (byte {error.start})")]) from None


class DepthError(ValueError):
    """JSON or YAML nested deeper than MAX_DEPTH."""

    def __init__(self, depth: int | None = None):
        super().__init__(f"nested too deeply ({depth} levels; the limit is {MAX_DEPTH})" if depth
                         else f"nested too deeply (more than {MAX_DEPTH} levels)")


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """The deepest nesting of brackets outside strings, found without parsing
    (two regular expressions and a running sum, all in C: 5 MB in 0.1 s)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def load_json(text: str | bytes):
    """``json.loads`` for what users send: its depth is checked before it is
    parsed (DepthError), so no nesting reaches the parser's recursion."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise DepthError(depth)
    try:
        return json.loads(text)
    except RecursionError:  # not reached within MAX_DEPTH; kept so it can never be a 500
        raise DepthError() from None


def check_depth(value, limit: int = MAX_DEPTH) -> None:
    """DepthError when an already parsed value (lists and dicts) nests deeper than ``limit``."""
    level = [value]
    for depth in range(limit + 1):
        level = [child for item in level if isinstance(item, (list, dict))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    raise DepthError()


def _read_json(raw: bytes):
    text = _decode(raw)  # its error is the file's, not JSON's
    try:
        return load_json(text)
    except json.JSONDecodeError as error:
        raise TaskFileError([("file", f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}")]) from None
    except DepthError as error:
        raise TaskFileError([("file", str(error))]) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise TaskFileError([("file", f"invalid JSON: {error}")]) from None


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases (they are how YAML bombs multiply),
    nested at most MAX_DEPTH deep: the composer recurses once per level, so
    it stops there before it goes any deeper."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "aliases are not allowed", event.start_mark)
        # Lists and mappings count, as in JSON (json_depth); scalars do not.
        level = 1 if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent) else 0
        self._depth = getattr(self, "_depth", 0) + level
        try:
            if self._depth > MAX_DEPTH:
                raise DepthError()
            return super().compose_node(parent, index)
        finally:
            self._depth -= level


def _read_yaml(raw: bytes):
    try:
        return yaml.load(_decode(raw), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise TaskFileError([("file", f"invalid YAML: {error}".replace("\n", " "))]) from None
    except DepthError as error:
        raise TaskFileError([("file", str(error))]) from None
    except RecursionError:  # not reached within MAX_DEPTH; kept so it can never be a 500
        raise TaskFileError([("file", DepthError().args[0])]) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise TaskFileError([("file", f"invalid YAML: {error}")]) from None


def _read_xml(raw: bytes) -> dict:
    """The Genode form: one task-set, no variants; turned into the JSON shape."""
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True)
    except DefusedXmlException as error:
        raise TaskFileError([("file", f"refused XML: {type(error).__name__} (DTDs and entities are not allowed)")]) from None
    except SafeET.ParseError as error:
        raise TaskFileError([("file", f"invalid XML: {error}")]) from None
    if root.tag != "taskset":
        raise TaskFileError([("file", f"the root element must be <taskset>, not <{root.tag}>")])
    errors: list[tuple[str, str]] = []
    tasks = []
    for index, element in enumerate(root):
        path = f"taskset.periodictask[{index}]"
        if element.tag != "periodictask":
            errors.append((f"taskset.{element.tag}", "unknown element; expected <periodictask>"))
            continue
        task: dict = {}
        for child in element:
            if child.tag == "id":
                if (child.text or "").strip() != str(index):
                    errors.append((f"{path}.id", f"must be {index}: ids are 0..n-1 in order"))
            elif child.tag == "config":
                task["config"] = {leaf.tag: _xml_value(leaf.text) for leaf in child}
            else:
                task[child.tag] = _xml_value(child.text)
        tasks.append(task)
    if errors:
        raise TaskFileError(errors)
    return {"tasksets": [{"tasks": tasks}]}


def _xml_value(text: str | None):
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"-?[0-9]{1,20}", text) else text


# -- validation ---------------------------------------------------------------


def _validate(document) -> dict:
    errors: list[tuple[str, str]] = []
    if not isinstance(document, dict):
        raise TaskFileError([("file", "must be an object with a 'tasksets' list")])
    for key in document:
        if key not in FILE_KEYS:
            errors.append((str(key), "unknown field"))
    name = document.get("name", "")
    if not isinstance(name, str) or len(name) > 200 or UNSTORABLE.search(name):
        errors.append(("name", "must be a string of at most 200 characters, without control characters or unpaired surrogates"))
    seed = document.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= 2**63 - 1:
        errors.append(("seed", "must be a non-negative integer"))
    tasksets = document.get("tasksets")
    if not isinstance(tasksets, list) or not tasksets:
        errors.append(("tasksets", "must be a non-empty list"))
        tasksets = []
    elif len(tasksets) > MAX_TASKSETS:
        errors.append(("tasksets", f"has {len(tasksets)} task-sets; the limit is {MAX_TASKSETS}"))
        tasksets = []
    normal = [_validate_taskset(ts, f"tasksets[{i}]", errors) for i, ts in enumerate(tasksets)]
    if errors:
        raise TaskFileError(errors)
    spec = {"name": name, "seed": seed, "tasksets": normal}
    total = variant_count(spec)
    if total > MAX_VARIANTS:
        raise TaskFileError([("tasksets", f"expand to {total} variants; the limit is {MAX_VARIANTS}")])
    return spec


def _validate_taskset(taskset, path: str, errors: list) -> dict:
    if not isinstance(taskset, dict):
        errors.append((path, "must be an object with a 'tasks' list"))
        return {}
    for key in taskset:
        if key not in TASKSET_KEYS:
            errors.append((f"{path}.{key}", "unknown field"))
    tasks = taskset.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        errors.append((f"{path}.tasks", "must be a non-empty list"))
        return {}
    if len(tasks) > MAX_TASKS:
        errors.append((f"{path}.tasks", f"has {len(tasks)} tasks; the limit is {MAX_TASKS}"))
        return {}
    return {"tasks": [_validate_task(task, f"{path}.tasks[{i}]", errors) for i, task in enumerate(tasks)]}


def _validate_task(task, path: str, errors: list) -> dict:
    if not isinstance(task, dict):
        errors.append((path, "must be an object"))
        return {}
    for key in task:
        if key not in TASK_KEYS:
            errors.append((f"{path}.{key}", "unknown field"))
    config = task.get("config", {})
    if not isinstance(config, dict):
        errors.append((f"{path}.config", "must be an object"))
        config = {}
    for key in config:
        if key not in CONFIG_KEYS:
            errors.append((f"{path}.config.{key}", "unknown field"))
    # The file's own field order (config.arg1 where config stands) decides
    # which varying field runs fastest, so it is recorded as "order".
    given = [k for key in task for k in (config if key == "config" else [key]) if k in TASK_FIELDS]
    values = {**{k: v for k, v in task.items() if k != "config"}, **({"arg1": config["arg1"]} if "arg1" in config else {})}
    normal = {}
    for field in TASK_FIELDS:
        field_path = f"{path}.config.arg1" if field == "arg1" else f"{path}.{field}"
        if field == "pkg" and field not in values:
            errors.append((field_path, "is required"))
            continue
        default = DEFAULT_QUOTA if field == "quota" else INT_FIELDS.get(field, (0, 0, None))[2]
        normal[field] = _validate_value(field, values.get(field, default), field_path, errors)
    normal["order"] = given
    return normal


def _validate_value(field: str, value, path: str, errors: list):
    """A scalar, or a list / range / random of scalars, normalised."""
    if isinstance(value, list):
        if not value:
            errors.append((path, "an empty list gives no variants"))
        elif len(value) > MAX_LIST:
            errors.append((path, f"a list of at most {MAX_LIST} values"))
        else:
            return {"list": [_validate_scalar(field, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]}
        return None
    if isinstance(value, dict):
        return _validate_generator(field, value, path, errors)
    return _validate_scalar(field, value, path, errors)


def _validate_generator(field: str, value: dict, path: str, errors: list):
    if len(value) != 1 or next(iter(value)) not in {"range", "random"}:
        errors.append((path, "must be a value, a list, {'range': [start, stop(, step)]} or {'random': [lo, hi]}"))
        return None
    if field not in INT_FIELDS:
        errors.append((path, "ranges and random values are for integer fields only"))
        return None
    (kind, args), = value.items()
    lo, hi = INT_FIELDS[field][:2]
    if not isinstance(args, list) or not all(_is_int(a) for a in args):
        errors.append((f"{path}.{kind}", "must be a list of integers"))
        return None
    if kind == "random":
        if len(args) != 2 or args[0] > args[1]:
            errors.append((f"{path}.random", "must be [lo, hi] with lo ≤ hi"))
        elif args[0] < lo or args[1] > hi:
            errors.append((f"{path}.random", f"must lie within {lo}..{hi}"))
        else:
            return {"random": list(args)}
        return None
    if len(args) not in (2, 3):
        errors.append((f"{path}.range", "must be [start, stop] or [start, stop, step]"))
        return None
    start, stop, step = (*args, 1) if len(args) == 2 else args
    if step == 0:
        errors.append((f"{path}.range", "step must not be 0"))
        return None
    values = range(start, stop, step)
    if not values:  # not len(): a range of more than 2**63 values has no len()
        errors.append((f"{path}.range", "is empty (the stop value is excluded)"))
    elif min(values[0], values[-1]) < lo or max(values[0], values[-1]) > hi:
        errors.append((f"{path}.range", f"values must lie within {lo}..{hi}"))
    elif abs(step) > hi - lo + 1 or not lo - abs(step) <= stop <= hi + abs(step):
        # Every number of a spec is stored and exported: a stop or step far
        # beyond the field's values names no variant and only overflows columns.
        errors.append((f"{path}.range", f"stop and step must stay near {lo}..{hi} (the values the field takes)"))
    else:
        return {"range": [start, stop, step]}
    return None


def _validate_scalar(field: str, value, path: str, errors: list):
    if field == "pkg":
        if not isinstance(value, str) or not PKG_NAME.fullmatch(value):  # "$" alone lets "hey\n" through
            errors.append((path, "must be 1-15 ASCII letters, digits, '_', '.' or '-' (a binary name, no path)"))
        return value
    if field == "quota":
        size = quota_bytes(str(value)) if _is_int(value) or isinstance(value, str) and QUOTA.fullmatch(value) else None
        if size is None or not 0 < size <= QUOTA_MAX_BYTES:
            errors.append((path, "must be a positive size of at most 1 TiB (1024G), such as 5M, 512K or 1G"))
            return value
        return str(value)
    lo, hi, _ = INT_FIELDS[field]
    if not _is_int(value):
        errors.append((path, f"must be an integer, not {type(value).__name__}"))
    elif value < lo:
        errors.append((path, f"must be ≥ {lo}"))
    elif value > hi:
        errors.append((path, f"must be ≤ {hi}"))
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def quota_bytes(quota: str) -> int | None:
    """A quota ("100M", "512K", "1G" or plain bytes) in bytes; None when it is none."""
    if not quota:
        return None
    factor = QUOTA_UNITS.get(quota[-1])
    try:
        return int(quota[:-1]) * factor if factor else int(quota)
    except ValueError:
        return None


# -- variants -----------------------------------------------------------------


def _count(value) -> int:
    if isinstance(value, dict):
        if "list" in value:
            return len(value["list"])
        if "range" in value:
            return len(range(*value["range"]))
    return 1  # a scalar or a random value


def _varying(taskset: dict) -> list[tuple[int, str, dict]]:
    """(task index, field, generator) of every field with more than one value."""
    return [
        (index, field, task[field])
        for index, task in enumerate(taskset["tasks"])
        for field in task.get("order", TASK_FIELDS)  # jsonb does not keep key order
        if _count(task[field]) > 1
    ]


def taskset_variant_count(taskset: dict) -> int:
    count = 1
    for _, _, value in _varying(taskset):
        count *= _count(value)
    return count


def variant_count(spec: dict) -> int:
    return sum(taskset_variant_count(ts) for ts in spec["tasksets"])


def pkg_names(spec: dict) -> list[str]:
    """Every binary name the file's tasks use (a ``pkg`` may be a list), in
    the order they first appear."""
    names: dict[str, None] = {}
    for taskset in spec["tasksets"]:
        for task in taskset["tasks"]:
            pkg = task["pkg"]
            names.update(dict.fromkeys(pkg["list"] if isinstance(pkg, dict) else [pkg]))
    return list(names)


class Expander:
    """Decodes variant indices of one spec; cheap to build, cached per spec."""

    def __init__(self, spec: dict):
        self.seed = spec.get("seed", 0)
        self.tasksets = spec["tasksets"]
        self.varying = [_varying(ts) for ts in self.tasksets]
        counts = [taskset_variant_count(ts) for ts in self.tasksets]
        self.starts = [0]
        for count in counts:
            self.starts.append(self.starts[-1] + count)

    @property
    def count(self) -> int:
        return self.starts[-1]

    def variant(self, index: int) -> list[dict]:
        """The concrete tasks of variant ``index`` (ids 0..n-1)."""
        if not 0 <= index < self.count:
            raise IndexError(f"variant {index} out of 0..{self.count - 1}")
        which = bisect.bisect_right(self.starts, index) - 1
        local = index - self.starts[which]
        chosen: dict[tuple[int, str], object] = {}
        for task_index, field, value in reversed(self.varying[which]):
            local, digit = divmod(local, _count(value))
            chosen[(task_index, field)] = _nth(value, digit)
        tasks = []
        for task_index, task in enumerate(self.tasksets[which]["tasks"]):
            concrete = {"id": task_index}
            for field in TASK_FIELDS:
                value = task[field]
                if (task_index, field) in chosen:
                    concrete[field] = chosen[(task_index, field)]
                elif isinstance(value, dict) and "random" in value:
                    concrete[field] = _draw(self.seed, index, f"tasksets[{which}].tasks[{task_index}].{field}", value["random"])
                else:
                    concrete[field] = _nth(value, 0)
            tasks.append(concrete)
        return tasks


def _nth(value, digit: int):
    if isinstance(value, dict):
        if "list" in value:
            return value["list"][digit]
        if "range" in value:
            return range(*value["range"])[digit]
    return value


def _draw(seed: int, variant: int, path: str, bounds: list[int]) -> int:
    """A reproducible integer in lo..hi: the same seed, variant and field
    always give the same value, in any process (no Python hash())."""
    lo, hi = bounds
    digest = hashlib.sha256(f"{seed}|{variant}|{path}".encode()).digest()
    return lo + int.from_bytes(digest[:8], "big") % (hi - lo + 1)


@lru_cache(maxsize=256)
def _expander_for(spec_json: str) -> Expander:
    return Expander(json.loads(spec_json))


def expander(spec: dict) -> Expander:
    return _expander_for(json.dumps(spec, sort_keys=True))
