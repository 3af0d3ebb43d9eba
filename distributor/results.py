"""What a job's (or a campaign's) results say, aggregated in the database.

The analytic labels are JSON in ``TaskSet.analysis`` (``distributor.analysis``)
and the measured outcome a column; a job may hold millions of task-sets, so
the figures come from one grouped query over a handful of extracted JSON keys
(``facts``), folded here into the agreement matrix (measured outcome against
each test's verdict) and the utilisation bins of the schedulability plot.

Every matrix cell has a filter (``cell_q``) that selects exactly the task-sets
it counts, so the pages can link each number to the list behind it; the fold
and the filters read the same extracted values the same way (``_word``).

On SQLite a JSON null extracted as text reads ``'null'``, on PostgreSQL SQL
NULL; both mean "no value" here.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet
from django.db.models.fields.json import KT

from distributor.models import TaskSet
from distributor.models.fields import JSONValues

# (key in the analysis dict, name on a page); "verdict" is the overall one.
TESTS = (
    ("liu_layland", "Liu & Layland"),
    ("hyperbolic", "hyperbolic bound"),
    ("rta", "RTA"),
    ("edf", "EDF demand"),
    ("simulation", "simulation"),
    ("verdict", "overall verdict"),
)
TEST_KEYS = tuple(key for key, _ in TESTS)
# Tests without an "applies" key: they always apply to a labelled set.
ALWAYS_APPLY = ("simulation", "verdict")
VERDICTS = ("yes", "no", "unknown", "na")
VERDICT_NAMES = {"yes": "yes", "no": "no", "unknown": "unknown", "na": "not applicable"}
OUTCOMES = tuple(TaskSet.Outcome.values)
TIMED = (TaskSet.Outcome.SCHEDULABLE, TaskSet.Outcome.UNSCHEDULABLE)  # resource is no timing result
BINS_PER_UNIT = 20  # utilisation bins 0.05 wide


def tasksets_for(job=None, campaign=None) -> QuerySet:
    """The task-sets of one job, or of every level of a campaign."""
    if campaign is not None:
        return TaskSet.objects.filter(job_id__in=campaign.levels.values("job_id"))
    return TaskSet.objects.filter(job=job)


# -- the extracted keys, and the filters on them ------------------------------------


def _paths() -> dict[str, str]:
    paths = {"l_error": "analysis__error"}
    for key in TEST_KEYS:
        if key == "verdict":
            paths.update(l_verdict_v="analysis__verdict", l_verdict_e="analysis__verdict_exact")
        else:
            paths.update({f"l_{key}_v": f"analysis__{key}__verdict", f"l_{key}_e": f"analysis__{key}__exact"})
            if key not in ALWAYS_APPLY:
                paths[f"l_{key}_a"] = f"analysis__{key}__applies"
    return paths


PATHS = _paths()


def with_labels(rows: QuerySet) -> QuerySet:
    """``rows`` with the label keys as aliases: what ``cell_q`` and
    ``disagrees_q`` filter on."""
    return rows.alias(**{name: KT(path) for name, path in PATHS.items()})


def _is(name: str, word: str) -> Q:
    return Q(**{name: word})


def _no_value(name: str) -> Q:
    return Q(**{f"{name}__isnull": True}) | Q(**{name: "null"})


def _sound() -> Q:
    """Labelled, without an error: its verdicts mean something."""
    return Q(analysis__isnull=False) & _no_value("l_error")


def _applies(test: str) -> Q:
    return _sound() if test in ALWAYS_APPLY else _sound() & _is(f"l_{test}_a", "true")


def cell_q(test: str, verdict: str, exact: bool = False) -> Q:
    """The task-sets whose ``test`` said ``verdict`` (one of VERDICTS); with
    ``exact``, only its exact verdicts. For a queryset from ``with_labels``."""
    if test not in TEST_KEYS or verdict not in VERDICTS:
        raise ValueError(f"unknown test {test!r} or verdict {verdict!r}")
    if exact and verdict not in ("yes", "no"):
        raise ValueError("only a yes or a no is exact or not")
    if verdict == "na":
        broken = Q(analysis__isnull=True) | (Q(l_error__isnull=False) & ~Q(l_error="null"))
        if test in ALWAYS_APPLY:
            return broken
        return broken | (_sound() & (Q(**{f"l_{test}_a__isnull": True}) | ~_is(f"l_{test}_a", "true")))
    said = {"yes": _is(f"l_{test}_v", "true"), "no": _is(f"l_{test}_v", "false"),
            "unknown": _no_value(f"l_{test}_v")}[verdict]
    condition = _applies(test) & said
    return condition & _is(f"l_{test}_e", "true") if exact else condition


def disagrees_q() -> Q:
    """Finished task-sets whose overall verdict contradicts the measured
    timing outcome (a resource outcome contradicts nothing)."""
    return _sound() & ((_is("l_verdict_v", "true") & Q(outcome=TaskSet.Outcome.UNSCHEDULABLE))
                       | (_is("l_verdict_v", "false") & Q(outcome=TaskSet.Outcome.SCHEDULABLE)))


# -- the grouped query and its fold ----------------------------------------------------


def _word(value) -> str | None:
    """An extracted key as the filters read it: 'true', 'false', other text, or None."""
    if value is None or value == "null":
        return None
    if value is True or value is False:  # a backend that gives JSON booleans as such
        return "true" if value else "false"
    return str(value)


def _category(row: dict, test: str) -> str:
    if not row["labelled"] or _word(row["l_error"]) is not None:
        return "na"
    if test not in ALWAYS_APPLY and _word(row[f"l_{test}_a"]) != "true":
        return "na"
    said = _word(row[f"l_{test}_v"])
    return {"true": "yes", "false": "no", None: "unknown"}.get(said, "unknown")


def facts(rows: QuerySet) -> list[dict]:
    """One grouped query over ``rows``' finished task-sets: a row per
    distinct (outcome, utilisation bin, every test's verdict, applies and
    exactness) with its count ``n``; on SQLite each document is parsed
    twice, not once per key (``JSONValues``)."""
    names = list(PATHS)
    keys = JSONValues("analysis", [tuple(PATHS[name].split("__")[1:]) for name in names],
                      bin_of=("utilisation", BINS_PER_UNIT))
    grouped = (rows.filter(state=TaskSet.State.FINISHED).order_by()
               .values("outcome", keys=keys,
                       labelled=ExpressionWrapper(Q(analysis__isnull=False), output_field=BooleanField()))
               .annotate(n=Count("id")))
    return [{**row, **dict(zip([*names, "bin"], json.loads(row["keys"] or "null") or [None] * (len(names) + 1)))}
            for row in grouped]


@dataclass
class Results:
    """The fold of ``facts``: counts only, no rows."""

    finished: int = 0
    labelled: int = 0
    # matrix[outcome][test][verdict] and exact[outcome][test][verdict] (yes/no only)
    matrix: dict = field(default_factory=dict)
    exact: dict = field(default_factory=dict)
    # bins[bin][series] = [schedulable or "yes", with a yes/no]; series "measured" or a test key
    bins: dict = field(default_factory=dict)
    disagree: int = 0
    disagree_exact: int = 0

    def as_dict(self) -> dict:
        return {
            "finished": self.finished, "labelled": self.labelled,
            "disagree": self.disagree, "disagree_exact": self.disagree_exact,
            "agreement": self.matrix, "agreement_exact": self.exact,
            "schedulability": [
                {"utilisation_from": round(b / BINS_PER_UNIT, 4), "utilisation_to": round((b + 1) / BINS_PER_UNIT, 4),
                 **{series: {"schedulable": yes, "of": total} for series, (yes, total) in counts.items()}}
                for b, counts in sorted(self.bins.items())],
        }


PLOTTED = ("measured", "rta", "edf", "simulation", "verdict")


def summarise(rows: QuerySet) -> Results:
    """The agreement matrix, its exact-only twin and the schedulability bins
    of ``rows`` (a job's or a campaign's task-sets)."""
    result = Results(
        matrix={o: {t: dict.fromkeys(VERDICTS, 0) for t in TEST_KEYS} for o in OUTCOMES},
        exact={o: {t: dict.fromkeys(("yes", "no"), 0) for t in TEST_KEYS} for o in OUTCOMES})
    bins: dict[int, dict[str, list[int]]] = defaultdict(lambda: {s: [0, 0] for s in PLOTTED})
    for row in facts(rows):
        n, outcome = row["n"], row["outcome"]
        if outcome not in OUTCOMES:
            continue
        result.finished += n
        result.labelled += n if row["labelled"] and _word(row["l_error"]) is None else 0
        said = {test: _category(row, test) for test in TEST_KEYS}
        for test, verdict in said.items():
            result.matrix[outcome][test][verdict] += n
            if verdict in ("yes", "no") and _word(row[f"l_{test}_e"]) == "true":
                result.exact[outcome][test][verdict] += n
        contradicts = {"yes": TaskSet.Outcome.UNSCHEDULABLE, "no": TaskSet.Outcome.SCHEDULABLE}.get(said["verdict"])
        if contradicts == outcome:
            result.disagree += n
            result.disagree_exact += n if _word(row["l_verdict_e"]) == "true" else 0
        if outcome in TIMED and row["bin"] is not None and said["verdict"] != "na":
            _add_to_bin(bins[int(row["bin"])], outcome, said, n)
    result.bins = dict(bins)
    return result


def _add_to_bin(counts: dict[str, list[int]], outcome: str, said: dict[str, str], n: int) -> None:
    counts["measured"][0] += n if outcome == TaskSet.Outcome.SCHEDULABLE else 0
    counts["measured"][1] += n
    for test in PLOTTED[1:]:
        if said[test] in ("yes", "no"):
            counts[test][0] += n if said[test] == "yes" else 0
            counts[test][1] += n
