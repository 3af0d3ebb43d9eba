"""The execution-time model: how long one job of a task runs, in whole ms.

A simulated target (SimSo) and the analytic schedulability tests both need a
job's execution time, and a real target never states it: it depends on the
binary (``pkg``) and its argument (``config.arg1``). The model is linear per
package, because that is what can be calibrated from a handful of
measurements on a real board and still be checked by hand:

    execution_time_ms(pkg, arg1) = max(1, ceil(base_ms + per_arg_ms * arg1))

A model is a JSON object::

    {
      "name": "genode-defaults",          # shown next to results it produced
      "version": 1,                       # bump when the figures change
      "note": "free text (optional)",
      "statistic": "max",                 # optional: which measured figure a point uses
      "packages": {
        "pi": {"base_ms": 2, "per_arg_ms": 0.5},
        "hey": {"base_ms": 1, "points": {"3": {"ms": 4.2, "count": 10, "mean": 4.0, "min": 3.8, "max": 4.2,
                                               "spread": 0.1}}},
        ...
      },
      "default": {"base_ms": 10, "per_arg_ms": 0}
    }

``per_arg_ms`` may be left out (0). ``points`` are measured execution times
per ``arg1`` (``ms`` is the figure used: the statistic of the measurements,
by default their maximum; count, mean, min, max and spread describe them); a
point wins over the line. A package needs a line (``base_ms``) or points;
with points only, an ``arg1`` not measured is unknown. ``default`` is used
for any package (or arg1) the model does not know, so a new binary runs with
a plain figure instead of failing; ``knows(pkg, arg1)`` says whether the
model knew it, and the analysis flags a task-set whose model did not. ``base_ms`` and ``per_arg_ms`` are
numbers ≥ 0; they are read as the decimals they are written as (0.1 × 30 is
exactly 3, not 3.0000000000000004) and the sum is rounded *up* to a whole ms,
so every time a session reports is an integer ms and nothing downstream needs
rounding. The result is at least 1 ms: a job always takes some time.

``load(value)`` accepts "default" (fixtures/etm.json), the path of a JSON file
(relative paths are taken from the project directory, because workers do not
share the caller's working directory) or the model itself as a dict.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PROJECT_DIR / "fixtures" / "etm.json"
MAX_FILE_BYTES = 1_000_000
MODEL_KEYS = {"name", "version", "note", "statistic", "packages", "default"}
TERM_KEYS = {"base_ms", "per_arg_ms", "points"}
POINT_KEYS = {"ms", "count", "mean", "min", "max", "spread"}
STATISTICS = ("max", "mean")
MAX_ARG1 = 2**31 - 1


class EtmError(ValueError):
    """A model that cannot be used; the message names the field at fault."""


class ExecutionTimeModel:
    """A validated model; build it with ``load`` or ``from_dict``."""

    def __init__(self, name: str, version: int, terms: dict[str, tuple[Fraction, Fraction] | None],
                 default: tuple[Fraction, Fraction], points: dict[str, dict[int, Fraction]] | None = None,
                 document: dict | None = None):
        self.name = name
        self.version = version
        self._terms = terms
        self._default = default
        self._points = points or {}
        self.document = document  # the validated JSON it was built from
        # Whether this version was calibrated on the target it labels for:
        # set by whoever knows the target (distributor.labels), never here.
        self.calibrated = False

    @classmethod
    def from_dict(cls, document: object) -> ExecutionTimeModel:
        """Validate a model document; raise EtmError naming the first bad field."""
        if not isinstance(document, dict):
            raise EtmError("the model must be a JSON object")
        unknown = sorted(set(document) - MODEL_KEYS)
        if unknown:
            raise EtmError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(MODEL_KEYS))})")
        name = document.get("name")
        if not isinstance(name, str) or not name.strip():
            raise EtmError("name: must be a non-empty string")
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise EtmError("version: must be an integer ≥ 1")
        if "note" in document and not isinstance(document["note"], str):
            raise EtmError("note: must be a string")
        packages = document.get("packages")
        if not isinstance(packages, dict):
            raise EtmError("packages: must be an object of pkg → {base_ms, per_arg_ms}")
        if document.get("statistic", "max") not in STATISTICS:
            raise EtmError(f"statistic: one of {', '.join(STATISTICS)}")
        terms = {pkg: _term(value, f"packages.{pkg}") for pkg, value in packages.items()}
        points = {pkg: _points(value.get("points"), f"packages.{pkg}.points") for pkg, value in packages.items()}
        if "default" not in document:
            raise EtmError("default: required (used for packages the model does not list)")
        default = _term(document["default"], "default", points_allowed=False)
        return cls(name, version, terms, default, {pkg: p for pkg, p in points.items() if p}, document)

    def execution_time_ms(self, pkg: str, arg1: int) -> int:
        """Whole ms one job of ``pkg`` with ``arg1`` runs, at least 1: the
        measured point for this arg1 if there is one, else the line."""
        point = self._points.get(pkg, {}).get(arg1)
        if point is not None:
            return max(1, math.ceil(point))
        base, per_arg = self._terms.get(pkg) or self._default
        return max(1, math.ceil(base + per_arg * arg1))

    def knows(self, pkg: str, arg1: int) -> bool:
        """True unless the figure for this package and arg1 is the default's."""
        return self._terms.get(pkg) is not None or arg1 in self._points.get(pkg, {})

    def __repr__(self) -> str:
        return f"<ExecutionTimeModel {self.name!r} v{self.version}>"


def _term(value: object, path: str, points_allowed: bool = True) -> tuple[Fraction, Fraction] | None:
    """The line of a package, or None when it has measured points only."""
    if not isinstance(value, dict):
        raise EtmError(f"{path}: must be an object with base_ms and per_arg_ms")
    keys = TERM_KEYS if points_allowed else TERM_KEYS - {"points"}
    unknown = sorted(set(value) - keys)
    if unknown:
        raise EtmError(f"{path}.{unknown[0]}: unknown field (known: {', '.join(sorted(keys))})")
    if "base_ms" not in value and value.get("points"):
        if "per_arg_ms" in value:
            raise EtmError(f"{path}.base_ms: required with per_arg_ms")
        return None
    return _number(value, "base_ms", path), _number(value, "per_arg_ms", path)


def _points(value: object, path: str) -> dict[int, Fraction]:
    """Measured points: arg1 (a JSON key, so a string) → the figure used."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EtmError(f"{path}: must be an object of arg1 → {{ms, count, mean, min, max, spread}}")
    points = {}
    for key, point in value.items():
        where = f"{path}.{key}"
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) <= MAX_ARG1):
            raise EtmError(f"{where}: arg1 must be a whole number 0..{MAX_ARG1}")
        if not isinstance(point, dict):
            raise EtmError(f"{where}: must be an object with ms")
        unknown = sorted(set(point) - POINT_KEYS)
        if unknown:
            raise EtmError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(POINT_KEYS))})")
        if "ms" not in point:
            raise EtmError(f"{where}.ms: required")
        for name in POINT_KEYS & set(point):
            _number(point, name, where)
        points[int(key)] = _number(point, "ms", where)
    return points


def _number(term: dict, key: str, path: str) -> Fraction:
    if key not in term and key == "base_ms":
        raise EtmError(f"{path}.base_ms: required")
    value = term.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EtmError(f"{path}.{key}: must be a number ≥ 0")
    # str() gives the decimal as written in the file, so the sum is exact.
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def load(value: object = "default") -> ExecutionTimeModel:
    """The model named by a target's ``etm`` setting; raise EtmError."""
    if isinstance(value, dict):
        return ExecutionTimeModel.from_dict(value)
    if not isinstance(value, str) or not value.strip():
        raise EtmError('must be "default", the path of a JSON file or the model itself as an object')
    path = DEFAULT_PATH if value == "default" else Path(value).expanduser()
    if not path.is_absolute():
        path = PROJECT_DIR / path
    try:
        stat = path.stat()
    except OSError as error:
        raise EtmError(f"cannot read {path}: {error.strerror}") from None
    return _load_file(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _load_file(path: str, mtime_ns: int, size: int) -> ExecutionTimeModel:
    """Parsed once per file version: sessions and analyses load per task-set."""
    if size > MAX_FILE_BYTES:
        raise EtmError(f"{path}: {size} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EtmError(f"{path}: not a readable JSON file ({error})") from None
    try:
        return ExecutionTimeModel.from_dict(document)
    except EtmError as error:
        raise EtmError(f"{path}: {error}") from None
