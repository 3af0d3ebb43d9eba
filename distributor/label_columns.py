"""The analytic labels as flat export columns: ``tasksets-csv`` and the
SQLite export carry one column per ``LABEL_COLUMNS`` name and, per task, the
``TASK_LABEL_COLUMNS`` (``docs/exports.md``). The labels themselves are
``distributor.analysis``'s."""
from __future__ import annotations

from typing import Any

LABEL_COLUMNS = (
    "utilisation", "utilisation_max_core", "etm_name", "etm_version", "etm_calibrated", "etm_unknown_pkgs",
    "policy", "back_to_back",
    "ll_applies", "ll_bound", "ll_pass", "hyperbolic_applies", "hyperbolic_product", "hyperbolic_pass",
    "rta_schedulable", "rta_exact", "edf_schedulable", "edf_exact", "sim_schedulable", "sim_exact",
    "sim_misses", "analytic_schedulable", "analytic_exact", "analysis_version",
)
TASK_LABEL_COLUMNS = ("c_ms", "wcrt_ms", "rta_exact", "sim_wcrt_ms")


def flat_labels(analysis: dict | None) -> dict[str, Any]:
    """One value per LABEL_COLUMNS name: booleans as 1/0 so a CSV reader sees
    numbers, None where there is no analysis or the test does not apply."""
    if not analysis:
        return dict.fromkeys(LABEL_COLUMNS)
    ll, hyp, rta = analysis["liu_layland"], analysis["hyperbolic"], analysis["rta"]
    edf, sim = analysis["edf"], analysis["simulation"]
    return {
        "utilisation": analysis["utilisation"],
        "utilisation_max_core": analysis["utilisation_max_core"],
        "etm_name": analysis["etm"]["name"],
        "etm_version": analysis["etm"]["version"],
        "etm_calibrated": _bit(analysis["etm"].get("calibrated", False)),
        "etm_unknown_pkgs": " ".join(analysis["etm"].get("unknown_pkgs", [])),
        "policy": analysis["policy"],
        "back_to_back": analysis["back_to_back"],
        "ll_applies": _bit(ll["applies"]), "ll_bound": ll["bound"], "ll_pass": _bit(ll["pass"]),
        "hyperbolic_applies": _bit(hyp["applies"]), "hyperbolic_product": hyp["product"],
        "hyperbolic_pass": _bit(hyp["pass"]),
        "rta_schedulable": _bit(rta["verdict"]), "rta_exact": _bit(rta["exact"]),
        "edf_schedulable": _bit(edf["verdict"]), "edf_exact": _bit(edf["exact"]),
        "sim_schedulable": _bit(sim["verdict"]), "sim_exact": _bit(sim["exact"]), "sim_misses": sim["misses"],
        "analytic_schedulable": _bit(analysis["verdict"]),
        "analytic_exact": _bit(analysis.get("verdict_exact")),
        "analysis_version": analysis.get("version", 1),
    }


def task_labels(analysis: dict | None) -> dict[int, dict[str, Any]]:
    """Per task id: its C, RTA bound and simulated worst response."""
    if not analysis:
        return {}
    return {row["id"]: {name: _cell(row.get(name)) for name in TASK_LABEL_COLUMNS} for row in analysis["tasks"]}


def _cell(value):
    return _bit(value) if isinstance(value, bool) else value


def _bit(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))
