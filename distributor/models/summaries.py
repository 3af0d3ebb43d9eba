from __future__ import annotations

from django.db import models


class ResultsSummary(models.Model):
    """One part of a job's or a campaign's results (the agreement matrix, a
    plot's SVG, the labels' models), computed once for a state of its
    task-sets and served from here by every process (``distributor.summaries``).

    ``key`` names the state read before it was computed (the jobs' ended
    counts and results generations, see ``summaries.Scope.key``); ``settled``
    when the state had not moved once it was computed: only then is it the
    figures of that state. An unsettled one serves only as a running job's
    recent figures, marked "as of ``computed_at``"."""

    scope = models.CharField(max_length=40, help_text="job-<id> or campaign-<id>")
    part = models.CharField(max_length=40, help_text="results, labels or plot-<name>")
    key = models.TextField()
    settled = models.BooleanField(default=False)
    data = models.JSONField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "part"], name="one_summary_per_part")]

    def __str__(self) -> str:
        return f"{self.scope} {self.part} ({self.key}{'' if self.settled else ', unsettled'})"
