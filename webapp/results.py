"""A job's or a campaign's results for the pages and the API: the agreement
matrix with a link per cell, the plots' addresses, and the task-set filters
those links use (``label_filters``), shared by the job page, the campaign's
task-set list and ``GET /api/jobs/<id>/tasksets``."""
from __future__ import annotations

from typing import Callable
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import Http404, HttpResponse

from distributor import plots, results, summaries
from distributor.models import TaskSet

OUTCOME_NAMES = dict(TaskSet.Outcome.choices)


class FilterError(ValueError):
    """A label filter that names no test or verdict: (field, message)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def label_filters(get, strict: bool = False) -> tuple[dict, Callable[[QuerySet], QuerySet]]:
    """The label filters of a query string (test, verdict, exact, disagrees):
    the values understood and a function that applies them to a queryset.
    Junk is ignored on pages; with ``strict`` (the API) it raises FilterError."""
    values: dict[str, str] = {}
    test, verdict = get.get("test"), get.get("verdict")
    if strict:
        _check(test, verdict, get.get("exact"), get.get("disagrees"))
    if test in results.TEST_KEYS and verdict in results.VERDICTS:
        values.update(test=test, verdict=verdict)
        if get.get("exact") in ("1", "true") and verdict in ("yes", "no"):
            values["exact"] = "1"
    if get.get("disagrees") in ("1", "true"):
        values["disagrees"] = "1"

    def apply(rows: QuerySet) -> QuerySet:
        if not values:
            return rows
        rows = results.with_labels(rows)
        if "test" in values:
            rows = rows.filter(results.cell_q(values["test"], values["verdict"], "exact" in values))
        if "disagrees" in values:
            rows = rows.filter(results.disagrees_q())
        return rows

    return values, apply


def _check(test, verdict, exact, disagrees) -> None:
    if (test is None) != (verdict is None):
        raise FilterError("verdict" if verdict is None else "test", "test and verdict go together")
    if test is not None and test not in results.TEST_KEYS:
        raise FilterError("test", f"must be one of {', '.join(results.TEST_KEYS)}")
    if verdict is not None and verdict not in results.VERDICTS:
        raise FilterError("verdict", f"must be one of {', '.join(results.VERDICTS)}")
    for name, value in (("exact", exact), ("disagrees", disagrees)):
        if value is not None and value not in ("0", "1", "true", "false"):
            raise FilterError(name, "must be 1 or 0 (true or false)")
    if exact in ("1", "true") and verdict not in ("yes", "no"):
        raise FilterError("exact", "only a yes or a no verdict is exact or not")


# -- the matrix for a page ------------------------------------------------------------


def cell_params(outcome: str, test: str, verdict: str, exact: bool = False) -> dict:
    params = {"state": TaskSet.State.FINISHED, "outcome": outcome, "test": test, "verdict": verdict}
    return {**params, "exact": "1"} if exact else params


def disagree_params() -> dict:
    return {"state": TaskSet.State.FINISHED, "disagrees": "1"}


def page_context(scope: summaries.Scope, list_url: str, plot_url: Callable[[str], str], started: int) -> dict:
    """What templates/web/_job_results.html shows: ``list_url`` is the
    filtered task-set list's address (a query string is added), ``started``
    how many task-sets exist (the figures cover the finished ones). The
    figures are the stored summary's (distributor.summaries), "as of" when
    a running job's are not of its state now."""
    summary, served = summaries.summary(scope)

    def link(params: dict) -> str:
        return f"{list_url}?{urlencode(params)}"

    tables = []
    for test, name in results.TESTS:
        lines = []
        for outcome in results.OUTCOMES:
            cells = []
            for verdict in results.VERDICTS:
                exact = summary.exact[outcome][test].get(verdict)
                cells.append({"verdict": verdict, "n": summary.matrix[outcome][test][verdict],
                              "url": link(cell_params(outcome, test, verdict)), "exact": exact,
                              "exact_url": link(cell_params(outcome, test, verdict, True)) if exact else ""})
            lines.append({"outcome": outcome, "name": OUTCOME_NAMES[outcome], "cells": cells})
        tables.append({"test": test, "name": name, "rows": lines})
    return {
        "summary": summary, "started": started, "tables": tables, "scope": scope,
        "as_of": served.as_of, "current": served.current,
        "verdicts": [("n/a" if v == "na" else v, results.VERDICT_NAMES[v]) for v in results.VERDICTS],
        "disagree_url": link(disagree_params()),
        "plots": [{"name": name, "url": plot_url(name)} for name in plots.PLOTS],
    }


def api_document(scope: summaries.Scope, list_url: str, plot_url: Callable[[str], str]) -> dict:
    """The same figures as JSON, each matrix cell with the API listing of its
    task-sets; ``as_of`` the moment they are of, ``current`` whether that is
    the state now (false only while a job runs)."""
    summary, served = summaries.summary(scope)
    document = summary.as_dict()
    document["as_of"] = served.as_of.isoformat()
    document["current"] = served.current
    document["tasksets"] = {
        outcome: {test: {verdict: f"{list_url}?{urlencode(cell_params(outcome, test, verdict))}"
                         for verdict in results.VERDICTS} for test in results.TEST_KEYS}
        for outcome in results.OUTCOMES} if list_url else None
    document["disagree_tasksets"] = f"{list_url}?{urlencode(disagree_params())}" if list_url else None
    document["plots"] = {name: plot_url(name) for name in plots.PLOTS}
    document["tests"] = dict(results.TESTS)
    return document


def plot_response(name: str, filename: str, scope: summaries.Scope) -> HttpResponse:
    """The plot ``name`` of a job's or a campaign's results as an SVG file of
    its own, shown inline and downloadable."""
    if name not in plots.PLOTS:
        raise Http404(f"unknown plot {name!r}")
    response = HttpResponse(summaries.plot(scope, name), content_type="image/svg+xml")
    response["Content-Disposition"] = f'inline; filename="{filename}-{name}.svg"'
    return response
