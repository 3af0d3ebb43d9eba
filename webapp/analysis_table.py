"""A task-set's analytic labels (``TaskSet.analysis``, the dict of
``distributor.analysis.analyse``) as tables a person reads: one row per test,
one row per task, and where the labels came from.

Stored dicts of every analysis version are read with ``.get``: version 1
rows lack ``version``, ``verdict_exact``, ``verdict_by`` and the per-task
``rta_exact``, and must still show.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TESTS = (
    ("liu_layland", "Liu & Layland bound"),
    ("hyperbolic", "Hyperbolic bound"),
    ("rta", "Response-time analysis"),
    ("edf", "EDF processor demand"),
    ("simulation", "Simulation of the job set"),
)
BY = {"liu_layland": "Liu & Layland", "hyperbolic": "hyperbolic bound", "rta": "response-time analysis",
      "edf": "EDF demand", "simulation": "simulation"}
POLICIES = {"fp": "fixed priorities", "edf": "by deadline (priority 128)", "mixed": "fixed priorities and the 128 band"}
DASH = "—"


@dataclass
class Table:
    tests: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""
    cores: int = 1
    verdict: bool | None = None
    verdict_exact: bool | None = None  # None: an old analysis that did not say
    verdict_by: str = ""

    @property
    def overall(self) -> dict | None:
        """The last row of ``tests``: the overall verdict."""
        return self.tests[-1] if self.tests else None


def build(analysis: dict | None) -> Table | None:
    """The tables, or None for a task-set without labels."""
    if not analysis or not isinstance(analysis, dict):
        return None
    table = Table(provenance=_provenance(analysis), error=str(analysis.get("error") or ""),
                  cores=int(analysis.get("cores") or 1))
    if table.error:
        return table
    table.verdict = analysis.get("verdict")
    table.verdict_exact = analysis.get("verdict_exact") if "verdict_exact" in analysis else None
    table.verdict_by = BY.get(analysis.get("verdict_by") or "", analysis.get("verdict_by") or "")
    tasks = [row for row in analysis.get("tasks") or [] if isinstance(row, dict)]
    table.tests = [_test(key, name, _section(analysis, key), analysis, tasks) for key, name in TESTS]
    table.tests.append(_overall(analysis))
    table.tasks = [_task(row) for row in tasks]
    return table


def verdict_word(value) -> str:
    return "yes" if value is True else "no" if value is False else "unknown"


def yes_no(value) -> str:
    return "yes" if value else "no"


def number(value, unit: str = "") -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def _section(analysis: dict, key: str) -> dict:
    value = analysis.get(key)
    return value if isinstance(value, dict) else {}


def _row(key: str, name: str, applies: bool | None, verdict, exact: bool | None,
         figures: list[tuple[str, str]]) -> dict:
    """``exact``: True, False (sufficient only) or None (not said); shown only
    for a test that applies and gave a verdict. ``applies`` None: not a test."""
    if applies is False or verdict is None or exact is None:
        exact_word = DASH
    else:
        exact_word = "exact" if exact else "sufficient"
    return {"key": key, "name": name, "applies": DASH if applies is None else yes_no(applies),
            "verdict": verdict_word(verdict),
            "exact": exact_word, "figures": [(label, value) for label, value in figures if value != DASH]}


def _test(key: str, name: str, section: dict, analysis: dict, tasks: list[dict]) -> dict:
    applies = bool(section.get("applies", key == "simulation"))  # the simulation has no "applies": it always runs
    verdict = section.get("verdict")
    if key in ("liu_layland", "hyperbolic"):
        exact = False  # bounds are sufficient tests, never exact
    else:
        exact = bool(section.get("exact"))
    figures = FIGURES[key](section, analysis, tasks)
    if not applies and key in WHERE:
        figures.append(("applies to", WHERE[key]))
    return _row(key, name, applies, verdict, exact, figures)


def _liu_layland_figures(section: dict, analysis: dict, tasks: list[dict]) -> list[tuple[str, str]]:
    u = analysis.get("utilisation_max_core", analysis.get("utilisation"))
    busiest = " (busiest core)" if int(analysis.get("cores") or 1) > 1 else ""
    return [(f"U{busiest}", number(u)), ("bound n(2^1/n − 1)", number(section.get("bound"))),
            ("U ≤ bound", _maybe(section.get("pass")))]


def _hyperbolic_figures(section: dict, analysis: dict, tasks: list[dict]) -> list[tuple[str, str]]:
    return [("Π(Uᵢ + 1)", number(section.get("product"))), ("bound", "2"),
            ("product ≤ 2", _maybe(section.get("pass")))]


def _rta_figures(section: dict, analysis: dict, tasks: list[dict]) -> list[tuple[str, str]]:
    if not tasks or not section.get("applies"):
        return []
    meets = [row.get("rta_meets") for row in tasks]
    figures = [("tasks that meet", f"{meets.count(True)} of {len(meets)}")]
    figures += [(label, str(meets.count(value))) for label, value in (("miss", False), ("unknown", None))
                if meets.count(value)]
    return figures


def _edf_figures(section: dict, analysis: dict, tasks: list[dict]) -> list[tuple[str, str]]:
    if not section.get("applies"):
        return []
    return [("deadlines checked", number(section.get("points")))]


def _simulation_figures(section: dict, analysis: dict, tasks: list[dict]) -> list[tuple[str, str]]:
    figures = [("jobs", number(section.get("jobs"))), ("misses", number(section.get("misses")))]
    miss = section.get("first_miss")
    if isinstance(miss, dict):
        figures.append(("first miss", f"task {miss.get('task')}, job {miss.get('job')} "
                                      f"({miss.get('kind', 'miss')}) at {miss.get('at_ms')} ms"))
    return figures


WHERE = {
    "liu_layland": "periodic tasks, deadline = period, distinct rate-monotonic priorities",
    "hyperbolic": "periodic tasks, deadline = period, distinct rate-monotonic priorities",
    "edf": "every task in the 128 band, none killed before its deadline",
}
FIGURES = {"liu_layland": _liu_layland_figures, "hyperbolic": _hyperbolic_figures, "rta": _rta_figures,
           "edf": _edf_figures, "simulation": _simulation_figures}


def _overall(analysis: dict) -> dict:
    exact = analysis.get("verdict_exact") if "verdict_exact" in analysis else None
    by = analysis.get("verdict_by")
    figures = [("by", BY.get(by, by) if by else DASH), ("policy", POLICIES.get(analysis.get("policy"), DASH)),
               ("U", number(analysis.get("utilisation")))]
    if int(analysis.get("cores") or 1) > 1:
        figures.append(("cores", str(analysis["cores"])))
    if analysis.get("back_to_back"):
        figures.append(("back-to-back tasks", str(analysis["back_to_back"])))
    return _row("verdict", "Overall", None, analysis.get("verdict"), exact, figures)


def _maybe(value) -> str:
    return DASH if value is None else yes_no(value)


def _task(row: dict) -> dict:
    meets = row.get("rta_meets")
    wcrt = row.get("wcrt_ms")
    deadline = row.get("deadline_ms")
    if wcrt is not None:
        bound = number(wcrt)
    elif meets is False and deadline is not None:
        bound = f"> {deadline}"  # the iteration passed the deadline and stopped
    elif meets is None and "rta_meets" in row:
        bound = "unknown"
    else:
        bound = DASH
    if "rta_exact" not in row or meets is None:
        exact = DASH
    else:
        exact = "exact" if row.get("rta_exact") else "sufficient"
    return {
        "id": row.get("id", DASH), "core": row.get("core", 0), "c": number(row.get("c_ms")),
        "period": number(row.get("period_ms")), "deadline": number(deadline), "u": number(row.get("u")),
        "wcrt": bound, "rta": {True: "meets", False: "misses"}.get(meets, "unknown"), "rta_exact": exact,
        "sim_wcrt": number(row.get("sim_wcrt_ms")), "sim_misses": number(row.get("sim_misses")),
        "missed": meets is False or bool(row.get("sim_misses")),
    }


def _provenance(analysis: dict) -> list[tuple[str, str]]:
    etm = analysis.get("etm") if isinstance(analysis.get("etm"), dict) else {}
    name, version = etm.get("name"), etm.get("version")
    model = DASH if not name else f"{name}, version {version}" if version is not None else str(name)
    if name and etm.get("calibrated"):
        model += ", calibrated on this target"
    rows = [("analysis version", str(analysis.get("version", 1))), ("execution-time model", model)]
    if etm.get("unknown_pkgs"):
        rows.append(("unknown to the model (its default used, nothing exact)", " ".join(etm["unknown_pkgs"])))
    return rows


def agreement(outcome: str, table: Table | None) -> str:
    """A sentence when an exact analytic verdict contradicts the measured
    timing outcome (``resource`` is not one): worth a look."""
    if table is None or table.error or table.verdict is None or not table.verdict_exact:
        return ""
    if outcome not in ("schedulable", "unschedulable"):
        return ""
    if table.verdict == (outcome == "schedulable"):
        return ""
    said = "schedulable" if table.verdict else "unschedulable"
    return (f"The analysis says {said} (exact, by {table.verdict_by or 'its best test'}) but the run was {outcome}: "
            "the target, or the execution-time model, departs from the model.")
