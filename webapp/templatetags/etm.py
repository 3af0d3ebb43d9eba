"""The job page's labels panel (templates/web/_job_labels.html): which
execution-time model the job's labels use, and the target's calibrated
models it could be relabelled with. A tag of its own, so the job view and
its template change by one line."""
from __future__ import annotations

from django import template

from distributor.models import EtmVersion, Job
from distributor.summaries import Scope, labels_used
from webapp.access import may_change

register = template.Library()


@register.inclusion_tag("web/_job_labels.html", takes_context=True)
def job_labels(context, job: Job) -> dict:
    user = context["request"].user
    # stored with the job's results summary: counted once per state of its labels
    scope = context.get("results", {}).get("scope")  # the results section's: one look at the stored parts
    rows = labels_used(scope if isinstance(scope, Scope) and scope.job == job else Scope(job=job))
    return {"job": job, "used": rows, "offers": _offers(job, rows), "csrf_token": context.get("csrf_token"),
            "can_relabel": may_change(user, job)}


def _offers(job: Job, used: list[dict]) -> list[EtmVersion]:
    """The newest version of each model calibrated on the job's target that
    not every label already uses."""
    labelled = {(row["name"], row["version"]) for row in used}
    newest: dict[int, EtmVersion] = {}
    for version in EtmVersion.objects.select_related("model").order_by("model_id", "version"):
        newest[version.model_id] = version
    return [v for v in newest.values()
            if v.calibrated_on(job.target.name) and (labelled != {(v.model.name, v.version)})]
