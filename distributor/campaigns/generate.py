"""Task generation for campaigns: UUniFast task-sets and single tasks drawn
from parameter ranges, reproducible from a seed.

Every draw comes from ``random.Random`` seeded with a string built from the
campaign's seed and what is drawn ("random:7", "grow:7:singles"): Python seeds
a string through SHA-512, so the same seed gives the same tasks in any
process, on any machine, whatever else was drawn before.

Execution times are picked through the execution-time model (``sessions.etm``)
the other way round: UUniFast gives each task a utilisation u and a period T,
so it should run C = u·T ms; ``pick_arg1`` searches the arg1 whose modelled
time is closest to C. That works where the model's time grows with arg1 (the
linear model's ``per_arg_ms`` > 0). For a package whose time does not depend
on arg1 (``hey``: a fixed 1 ms) arg1 stays 0 and the task's real utilisation
differs from the drawn one: the analysis stored with each result uses the
model's time, so the labels stay right; only the campaign's U is approximate.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass

from distributor.taskfile import DEFAULT_QUOTA, INT_FIELDS, TASK_FIELDS, UINT32_MAX

EDF = 128


class ParameterError(ValueError):
    """A bad generation parameter; ``option`` names it."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


# -- parameters -------------------------------------------------------------------


def parse_choice(option: str, text: str, integer: bool = True) -> dict:
    """"a,b,c" → {"list": [...]}; "lo:hi" or "lo:hi:step" (hi included) →
    {"range": [lo, hi, step]}; a single value → {"list": [value]}."""
    text = str(text).strip()
    if ":" in text and integer:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(_is_int_text(p) for p in parts):
            raise ParameterError(option, f"{text!r}: a range is lo:hi or lo:hi:step, integers")
        lo, hi, step = (*map(int, parts), 1) if len(parts) == 2 else map(int, parts)
        if step < 1 or lo > hi:
            raise ParameterError(option, f"{text!r}: needs lo ≤ hi and step ≥ 1")
        return {"range": [lo, hi, step]}
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ParameterError(option, "no value given")
    if integer:
        if not all(_is_int_text(v) for v in values):
            raise ParameterError(option, f"{text!r}: integers expected")
        values = [int(v) for v in values]
    return {"list": values}


def parse_weights(option: str, text: str) -> dict[str, float]:
    """"pi:3,tumatmul:1" → {"pi": 3.0, "tumatmul": 1.0}; a bare name weighs 1."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ParameterError(option, f"{part!r}: the weight must be a number") from None
        if not name or value <= 0 or not math.isfinite(value):
            raise ParameterError(option, f"{part!r}: a package name and a positive weight")
        weights[name] = weights.get(name, 0.0) + value
    if not weights:
        raise ParameterError(option, "no package given")
    return weights


def parse_span(option: str, text: str, minimum: float, maximum: float) -> tuple[float, float]:
    """"0.8" → (0.8, 0.8); "0.5:0.9" → (0.5, 0.9)."""
    parts = str(text).split(":")
    try:
        lo, hi = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not (minimum <= lo <= hi <= maximum):
        raise ParameterError(option, f"{text!r}: a number or lo:hi within {minimum:g}..{maximum:g}")
    return lo, hi


def _is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def draw(rng: random.Random, choice: dict) -> int | str:
    if "list" in choice:
        return rng.choice(choice["list"])
    lo, hi, step = choice["range"]
    return rng.randrange(lo, hi + 1, step)


# -- execution times --------------------------------------------------------------


def pick_arg1(model, pkg: str, wanted_ms: int) -> int:
    """The arg1 whose modelled execution time is closest to ``wanted_ms``
    (binary search: the model's time never falls as arg1 grows)."""
    if model.execution_time_ms(pkg, 0) >= wanted_ms:
        return 0
    lo, hi = 0, UINT32_MAX
    if model.execution_time_ms(pkg, hi) < wanted_ms:  # out of reach: as close as it gets,
        return 0 if model.execution_time_ms(pkg, hi) == model.execution_time_ms(pkg, 0) else hi  # or flat
    while hi - lo > 1:  # time(lo) < wanted ≤ time(hi)
        middle = (lo + hi) // 2
        if model.execution_time_ms(pkg, middle) < wanted_ms:
            lo = middle
        else:
            hi = middle
    below, above = model.execution_time_ms(pkg, lo), model.execution_time_ms(pkg, hi)
    return lo if wanted_ms - below < above - wanted_ms else hi


def uunifast(rng: random.Random, count: int, total: float) -> list[float]:
    """Bini & Buttazzo's UUniFast: ``count`` utilisations summing to ``total``,
    uniformly distributed over that simplex."""
    shares, remaining = [], total
    for index in range(1, count):
        following = remaining * rng.random() ** (1 / (count - index))
        shares.append(remaining - following)
        remaining = following
    return [*shares, remaining]


# -- random task-sets --------------------------------------------------------------


@dataclass(frozen=True)
class RandomParams:
    tasks: int
    utilisation: tuple[float, float]
    periods: dict  # {"range": [lo, hi, step]} or {"list": [...]}
    distribution: str  # "uniform" or "loguniform" (for a period range)
    packages: dict[str, float]
    count: int
    jobs: int
    priorities: str  # "rm", "edf" or "random"

    def as_dict(self) -> dict:
        return {"tasks": self.tasks, "utilisation": list(self.utilisation), "periods": self.periods,
                "distribution": self.distribution, "packages": self.packages, "count": self.count,
                "jobs": self.jobs, "priorities": self.priorities}


def random_tasksets(params: RandomParams, seed: int, model) -> list[list[dict]]:
    """``count`` task-sets, synchronous (offset 0) with implicit deadlines."""
    rng = random.Random(f"random:{seed}")
    return [_random_taskset(rng, params, model) for _ in range(params.count)]


def _random_taskset(rng: random.Random, params: RandomParams, model) -> list[dict]:
    total = rng.uniform(*params.utilisation)
    shares = uunifast(rng, params.tasks, total)
    names, weights = zip(*sorted(params.packages.items()))
    tasks = []
    for share in shares:
        period = _draw_period(rng, params)
        pkg = rng.choices(names, weights)[0]
        arg1 = pick_arg1(model, pkg, max(1, round(share * period)))
        tasks.append({"pkg": pkg, "arg1": arg1, "period": period, "numberofjobs": params.jobs})
    for task, priority in zip(tasks, _priorities(rng, tasks, params.priorities)):
        task["priority"] = priority
    return tasks


def _draw_period(rng: random.Random, params: RandomParams) -> int:
    if "list" in params.periods or params.distribution == "uniform":
        return int(draw(rng, params.periods))
    lo, hi, step = params.periods["range"]
    value = math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))
    return min(hi, lo + int((value - lo) // step) * step)


def _priorities(rng: random.Random, tasks: list[dict], policy: str) -> list[int]:
    """Genode priorities: rate-monotonic (shorter period = smaller number =
    higher; equal periods by position), all 128 for EDF, or shuffled."""
    if policy == "edf":
        return [EDF] * len(tasks)
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i]["period"], i))
    if policy == "random":
        rng.shuffle(order)
    ranks = [0] * len(tasks)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


# -- single tasks for growing campaigns --------------------------------------------


def draw_task(rng: random.Random, fields: dict[str, dict]) -> dict:
    """One task with each given field drawn from its choice; others default."""
    return {name: draw(rng, fields[name]) for name in TASK_FIELDS if name in fields}


def concrete(task: dict) -> dict:
    """Every field of a task, defaults filled in (the digest's input)."""
    values = {name: INT_FIELDS[name][2] for name in INT_FIELDS}
    values.update(pkg="", quota=DEFAULT_QUOTA)
    values.update({k: v for k, v in task.items() if k != "id"})
    values["quota"] = str(values["quota"])
    return {name: values[name] for name in TASK_FIELDS}


def task_digest(task: dict) -> str:
    return hashlib.sha256(json.dumps(concrete(task), sort_keys=True).encode()).hexdigest()


def set_digest(tasks: list[dict]) -> str:
    """The same for any order of the same tasks: a task-set is a set."""
    return hashlib.sha256("|".join(sorted(task_digest(t) for t in tasks)).encode()).hexdigest()


def taskset_file(name: str, seed: int, tasksets: list[list[dict]]) -> bytes:
    """A task-set file (DESIGN §4) with only the fields that differ from the
    defaults, so that thousands of sets stay well inside the upload limit."""
    defaults = concrete({})
    body = []
    for tasks in tasksets:
        compact = []
        for task in tasks:
            values = concrete(task)
            entry = {k: v for k, v in values.items() if k not in ("arg1", "pkg") and v != defaults[k]}
            compact.append({"pkg": values["pkg"], **({"config": {"arg1": values["arg1"]}} if values["arg1"] else {}),
                            **entry})
        body.append({"tasks": compact})
    return json.dumps({"name": name, "seed": seed, "tasksets": body}, separators=(",", ":")).encode()
