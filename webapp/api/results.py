"""``GET /api/jobs/<id>/results`` and ``GET /api/campaigns/<id>/results``: the
figures of the job and campaign pages as JSON (webapp/results.py) — the
agreement matrix with its exact-only twin, the schedulability bins with their
counts, how many task-sets they cover, the plots' SVG addresses and, for a
job, the API listing of each cell's task-sets."""
from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from distributor.campaigns.models import Campaign
from distributor.models import Job
from distributor.summaries import Scope
from webapp.api.auth import api
from webapp.api.common import get_or_404
from webapp.results import api_document


@api("GET")
def job_results(request: HttpRequest, job_id: int) -> JsonResponse:
    job = get_or_404(Job.objects.all(), job_id)
    document = api_document(
        Scope(job=job), request.build_absolute_uri(reverse("api-job-tasksets", args=[job.pk])),
        lambda name: request.build_absolute_uri(reverse("job-plot", args=[job.pk, name])))
    return JsonResponse({"job": job.pk, "started": job.started, **document})


@api("GET")
def campaign_results(request: HttpRequest, campaign_id: int) -> JsonResponse:
    campaign = get_or_404(Campaign.objects.all(), campaign_id)
    scope = Scope(campaign=campaign)
    document = api_document(
        scope, "", lambda name: request.build_absolute_uri(reverse("campaign-plot", args=[campaign.pk, name])))
    document["tasksets_page"] = request.build_absolute_uri(reverse("campaign-tasksets", args=[campaign.pk]))
    return JsonResponse({"campaign": campaign.pk, "started": scope.started(), **document})
