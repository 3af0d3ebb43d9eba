"""Submitting jobs, the jobs list, a job's page and its exports."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from distributor import exports
from distributor.audit import record, user_actor
from distributor.queue import resubmit_job
from distributor.results import TESTS, VERDICT_NAMES
from distributor.summaries import Scope
from distributor.models import Job, JobContent, Target, TaskSet
from webapp.access import login_required, may_change
from webapp.downloads import export_response
from webapp.forms import SubmitForm
from webapp.limits import body_limit
from webapp.params import whole_number
from webapp.progress import add_rate, progress_of
from webapp.results import label_filters, page_context, plot_response
from webapp.submission import Submission, SubmissionError, check, submit as submit_submission

JOBS_PER_PAGE = 25
TASKSETS_PER_PAGE = 50
JOB_FILTERS = {
    "active": Q(state__in=Job.ACTIVE_STATES),
    "queued": Q(state=Job.State.QUEUED),
    "running": Q(state=Job.State.RUNNING),
    "finished": Q(state=Job.State.FINISHED),
    "cancelled": Q(state=Job.State.CANCELLED),
}


# -- submission -----------------------------------------------------------------


def _too_large(request: HttpRequest, length: int, limit: int) -> HttpResponse:
    """A body over the limit, refused unread (webapp/limits.py): the empty form,
    the cause at the file's row. Only a logged-in user sees the form."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    form = SubmitForm(initial={"target": _default_target_name()})
    message = (f"the request is {length:,} bytes; a task-set file or a pasted text may be at most "
               f"{settings.TASKSET_FILE_MAX_BYTES:,} bytes. Nothing was read.")
    return render(request, "web/submit.html", {"form": form, "limits": _limits(), "too_large": message}, status=413)


@body_limit(too_large=_too_large)
@login_required
def submit(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST "check": validate, store nothing. POST "submit": queue it."""
    if request.method != "POST":
        form = SubmitForm(initial={"target": _default_target_name()})
        return render(request, "web/submit.html", {"form": form, "limits": _limits()})
    form = SubmitForm(request.POST, request.FILES)
    context = {"form": form, "limits": _limits(), "file_errors": []}
    form.is_valid()
    # The file is checked even when an option is malformed: every error shows at once.
    parsed = _check(form, context) if "content" in form.cleaned_data else None
    if form.errors or context["file_errors"]:
        form.echo_content()
        return render(request, "web/submit.html", context, status=400)
    if request.POST.get("action") == "check":
        form.echo_content()
        context["checked"] = {"variants": parsed.variant_count, "format": parsed.format,
                              "tasksets": len(parsed.spec["tasksets"]),
                              "runs": parsed.variant_count - form.cleaned_data["offset"]}
        return render(request, "web/submit.html", context)
    try:
        job = submit_submission(_submission(form.cleaned_data), owner=request.user)
    except SubmissionError as error:  # the queue refused what the check let through (an upload removed meanwhile)
        _show(form, context, error)
        form.echo_content()
        return render(request, "web/submit.html", context, status=400)
    messages.success(request, f"Queued job #{job.pk} '{job.name}': {job.total:,} task-set(s).")
    return redirect("job", job.pk)


def _check(form: SubmitForm, context: dict):
    try:
        return check(_submission(form.cleaned_data))
    except SubmissionError as error:
        _show(form, context, error)
        return None


def _show(form: SubmitForm, context: dict, error: SubmissionError) -> None:
    """File errors go in their list; an option's error goes next to its field,
    unless the field already has one (a word where a number belongs)."""
    context["file_errors"] = error.file_errors
    for field, message in error.option_errors.items():
        if field not in form.errors:
            form.add_error(field if field in form.fields else None, message)


def _submission(data: dict) -> Submission:
    """Options that did not parse are left at their defaults (their field has its error already)."""
    return Submission(data=data["content"], filename=data.get("filename") or "", target=data.get("target") or None,
                      name=data.get("name", ""), offset=data.get("offset", 0), tries=data.get("tries"),
                      priority=data.get("priority", 0), admission=data.get("admission"),
                      monitors=data.get("monitors", []), notify=data.get("notify", []),
                      time_limit=data.get("time_limit"), notify_bad=data.get("notify_bad", False))


def _default_target_name() -> str:
    target = Target.objects.filter(is_default=True).only("name").first()
    return target.name if target else ""


def _limits() -> dict:
    return {"file": settings.TASKSET_FILE_MAX_BYTES}


# -- the jobs list ----------------------------------------------------------------


@login_required
def jobs(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    query = request.GET.get("q", "").strip()
    mine = request.GET.get("mine") == "1"
    rows = Job.objects.select_related("target", "owner").order_by("-pk")
    if state in JOB_FILTERS:
        rows = rows.filter(JOB_FILTERS[state])
    if query:
        condition = Q(name__icontains=query) | Q(source_name__icontains=query)
        number = whole_number(query.lstrip("#"))
        if number is not None:
            condition |= Q(pk=number)
        rows = rows.filter(condition)
    if mine:
        rows = rows.filter(owner=request.user)
    page = Paginator(rows, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    progress = progress_of(list(page.object_list))
    for job in page.object_list:
        job.p = progress[job.pk]
    return render(request, "web/jobs.html", {"page": page, "state": state, "q": query, "mine": mine,
                                             "states": list(JOB_FILTERS)})


# -- one job ------------------------------------------------------------------------


def _job_or_404(job_id: int) -> Job:
    return get_object_or_404(Job.objects.select_related("target", "owner"), pk=job_id)


def _with_progress(job: Job) -> Job:
    job.p = add_rate(job, progress_of([job])[job.pk])
    return job


@login_required
def job(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _with_progress(_job_or_404(job_id))
    filters = _taskset_filters(request)
    tasksets = filters["apply"](TaskSet.objects.filter(job=job, **filters["where"]))
    paginator = Paginator(tasksets.select_related("machine__target").order_by("variant"), TASKSETS_PER_PAGE)
    if not filters["values"]:
        # A row exists for every variant ever started, and only for those:
        # the cursor counts them without counting 10^5 rows on every view.
        paginator.count = job.started
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "web/job.html", {
        "job": job, "page": page, "filters": filters["values"], "query": filters["query"],
        "states": TaskSet.State.choices, "outcomes": TaskSet.Outcome.choices,
        "exports": exports.FORMATS, "can_cancel": may_change(request.user, job) and job.is_active,
        "notifications": list(job.notifications.all()),
        "contents": JobContent.of_job(job.pk),
        "tests": TESTS, "verdicts": list(VERDICT_NAMES.items()),
        "results": page_context(Scope(job=job), reverse("job", args=[job.pk]),
                                lambda name: reverse("job-plot", args=[job.pk, name]), job.started),
    })


@login_required
def job_plot(request: HttpRequest, job_id: int, name: str) -> HttpResponse:
    """A plot of the job's results as an SVG file of its own (linked from the page, downloadable)."""
    job = get_object_or_404(Job, pk=job_id)
    return plot_response(name, f"job-{job.pk}", Scope(job=job))


def _taskset_filters(request: HttpRequest) -> dict:
    """The job page's task-set filters, from the query string; junk is ignored."""
    get = request.GET
    where, values = {}, {}
    if get.get("state") in TaskSet.State.values:
        where["state"] = values["state"] = get["state"]
    if get.get("outcome") in TaskSet.Outcome.values:
        where["outcome"] = values["outcome"] = get["outcome"]
    for key, column in (("machine", "machine_id"), ("variant", "variant")):
        number = whole_number(get.get(key))
        if number is not None:
            values[key] = str(number)
            where[column] = number
    if get.get("error") == "1":
        values["error"] = "1"
        where["last_error__gt"] = ""
    labels, apply = label_filters(get)
    values.update(labels)
    query = "&".join(f"{key}={value}" for key, value in values.items())
    return {"where": where, "values": values, "query": query, "apply": apply}


# htmx stops polling on this status: a job that has ended will not change.
STOP_POLLING = 286


@login_required
def job_fragment(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _with_progress(_job_or_404(job_id))
    return render(request, "web/_job_live.html", {"job": job}, status=200 if job.is_active else STOP_POLLING)


@login_required
@require_POST
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(job_id)
    if not may_change(request.user, job):
        raise PermissionDenied("only its owner or staff may cancel a job")
    if job.cancel():
        record(user_actor(request.user), "job-cancel", f"job {job.pk}", {"now": False})
        messages.success(request, f"Cancelled job #{job.pk}: running task-sets finish, nothing new starts.")
    else:
        messages.info(request, f"Job #{job.pk} had already ended.")
    return redirect("job", job.pk)


@login_required
@require_POST
def resubmit(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(job_id)
    try:
        new = resubmit_job(job, owner=request.user)
    except ValidationError as error:
        messages.error(request, f"Not resubmitted: {'; '.join(error.messages)}")
        return redirect("job", job.pk)
    record(user_actor(request.user), "job-resubmit", f"job {job.pk}", {"new_job": new.pk})
    messages.success(request, f"Resubmitted as job #{new.pk}.")
    return redirect("job", new.pk)


@login_required
def export(request: HttpRequest, job_id: int, format: str) -> HttpResponse:
    """The same bytes as the API's export (webapp/downloads.py)."""
    job = _job_or_404(job_id)
    if format not in exports.FORMATS:
        raise Http404(f"unknown export format {format!r}")
    return export_response(job, format)
