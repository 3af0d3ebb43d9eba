"""Campaigns on the web: the list, a page per campaign (levels, progress, the
results' plots, its jobs), a form that starts a random or a growing one, and
stop / continue (a stopped campaign continues where it stopped)."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from distributor.audit import record, user_actor
from distributor.campaigns import generate, options, services
from distributor.campaigns.models import Campaign
from distributor.models import Job, TaskSet
from distributor.results import TESTS, VERDICT_NAMES, tasksets_for
from distributor.summaries import Scope
from distributor.taskfile import TaskFileError
from webapp.access import login_required, may_change
from webapp.forms import GrowCampaignForm, RandomCampaignForm
from webapp.progress import progress_of
from webapp.results import label_filters, page_context, plot_response

TASKSETS_PER_PAGE = 50
FORMS = {Campaign.Kind.RANDOM: RandomCampaignForm, Campaign.Kind.GROW: GrowCampaignForm}


@login_required
def campaigns(request: HttpRequest) -> HttpResponse:
    rows = Campaign.objects.select_related("target", "owner").order_by("-pk")[:200]
    return render(request, "web/campaigns.html", {"campaigns": rows})


@login_required
def campaign(request: HttpRequest, campaign_id: int) -> HttpResponse:
    row = get_object_or_404(Campaign.objects.select_related("target", "owner"), pk=campaign_id)
    report = services.status(row)
    jobs = list(Job.objects.filter(pk__in=[level["job"] for level in report["levels"] if level["job"]]))
    bars = progress_of(jobs)
    for level in report["levels"]:
        level["bar"] = bars.get(level["job"])
    scope = Scope(campaign=row)
    return render(request, "web/campaign.html", {
        "campaign": row, "report": report, "may_change": may_change(request.user, row),
        "results": page_context(scope, reverse("campaign-tasksets", args=[row.pk]),
                                lambda name: reverse("campaign-plot", args=[row.pk, name]), scope.started()),
    })


@login_required
def campaign_plot(request: HttpRequest, campaign_id: int, name: str) -> HttpResponse:
    row = get_object_or_404(Campaign, pk=campaign_id)
    return plot_response(name, f"campaign-{row.pk}", Scope(campaign=row))


@login_required
def campaign_tasksets(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The task-sets of every level, filtered like a job's list (where the
    campaign page's agreement matrix links)."""
    row = get_object_or_404(Campaign, pk=campaign_id)
    get, where, values = request.GET, {}, {}
    for key, choices in (("state", TaskSet.State.values), ("outcome", TaskSet.Outcome.values)):
        if get.get(key) in choices:
            where[key] = values[key] = get[key]
    labels, apply = label_filters(get)
    values.update(labels)
    rows = apply(tasksets_for(campaign=row).filter(**where)).select_related("job").order_by("job_id", "variant")
    page = Paginator(rows, TASKSETS_PER_PAGE).get_page(get.get("page"))
    return render(request, "web/campaign_tasksets.html", {
        "campaign": row, "page": page, "filters": values, "query": urlencode(values),
        "states": TaskSet.State.choices, "outcomes": TaskSet.Outcome.choices,
        "tests": TESTS, "verdicts": list(VERDICT_NAMES.items()),
    })


@login_required
def campaign_new(request: HttpRequest) -> HttpResponse:
    """GET: both forms. POST (kind=random|grow): start the campaign, or show
    the form again with each error at its field."""
    kind = request.POST.get("kind") if request.method == "POST" else None
    forms = {name: form_class(prefix=name) for name, form_class in FORMS.items()}
    if kind is not None:
        if kind not in FORMS:
            raise Http404("unknown kind of campaign")
        form = forms[kind] = FORMS[kind](request.POST, prefix=kind)
        if form.is_valid():
            try:
                started = options.start(kind, form.options(), owner=request.user)
            except generate.ParameterError as error:
                form.add_error(_field(form, error.option), str(error).split(": ", 1)[1])
            except (TaskFileError, ValidationError) as error:
                form.add_error(None, f"the generated task-sets were refused: {error}")
            else:
                messages.success(request, f"Started campaign #{started.pk} '{started.name}'.")
                return redirect("campaign", started.pk)
    return render(request, "web/campaign_new.html", {"forms": forms, "kind": kind or Campaign.Kind.RANDOM},
                  status=400 if kind else 200)


def _field(form, option: str) -> str | None:
    name = option.lstrip("-").replace("-", "_")
    return name if name in form.fields else None


def _changeable(request: HttpRequest, campaign_id: int) -> Campaign:
    row = get_object_or_404(Campaign, pk=campaign_id)
    if not may_change(request.user, row):
        raise PermissionDenied("only its owner or staff may stop or continue a campaign")
    return row


@login_required
@require_POST
def campaign_stop(request: HttpRequest, campaign_id: int) -> HttpResponse:
    row = _changeable(request, campaign_id)
    if services.stop(row, cancel_level=True):
        record(user_actor(request.user), "campaign-stop", f"campaign {row.pk}", {"cancel_level": True})
        messages.success(request, f"Stopped campaign #{row.pk}: its level's queued task-sets are cancelled; "
                                  "Continue runs them.")
    else:
        messages.info(request, f"Campaign #{row.pk} was not running.")
    return redirect("campaign", row.pk)


@login_required
@require_POST
def campaign_continue(request: HttpRequest, campaign_id: int) -> HttpResponse:
    row = _changeable(request, campaign_id)
    if services.resume(row):
        record(user_actor(request.user), "campaign-continue", f"campaign {row.pk}")
        messages.success(request, f"Campaign #{row.pk} continues where it stopped.")
    else:
        messages.info(request, f"Campaign #{row.pk} was not stopped.")
    return redirect("campaign", row.pk)
