"""API endpoints. Each is a short function; input checks raise ApiError,
which the ``api`` decorator turns into a 4xx answer naming the field."""
from __future__ import annotations

import json
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from distributor import exports, reconciler
from distributor.audit import record, user_actor
from distributor.campaigns import generate, options as campaign_options, services as campaign_services
from distributor.campaigns.models import Campaign
from distributor.status import overview
from distributor.queue import filename_error, resubmit_job
from distributor.models import Job, JobContent, TaskJob, TaskSet
from distributor.taskfile import DepthError, TaskFileError, load_json
from webapp.access import may_change
from webapp.api.auth import ApiError, api, json_body
from webapp.api.common import fields_of as _fields, get_or_404 as _get, iso as _iso, listing as _listing, page_of as _page
from webapp.api.schema import schema
from webapp.downloads import export_response
from webapp.limits import size_message
from webapp.progress import add_rate, progress_of
from webapp.results import FilterError, label_filters
from webapp.submission import Submission, SubmissionError, check, submit

MAX_TASKJOBS = 10_000
OPTION_FIELDS = {"target", "name", "offset", "tries", "priority", "admission", "monitors", "notify", "time_limit",
                 "notify_bad"}


@api("GET")
def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema(request.build_absolute_uri("/api")))


# -- submitting ------------------------------------------------------------------


@api("POST")
def check_only(request: HttpRequest) -> JsonResponse:
    sub = _submission(request)
    try:
        parsed = check(sub)
    except SubmissionError as error:
        raise _submission_error(error) from None
    return JsonResponse({"valid": True, "variant_count": parsed.variant_count, "format": parsed.format,
                         "tasksets": len(parsed.spec["tasksets"]), "runs": parsed.variant_count - sub.offset})


@api("GET", "POST")
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        try:
            job = submit(_submission(request), owner=request.user)
        except SubmissionError as error:
            raise _submission_error(error) from None
        return JsonResponse(_job(request, job), status=201)
    rows = Job.objects.select_related("target", "owner").prefetch_related("notifications").order_by("-pk")
    state = request.GET.get("state")
    if state is not None:
        if state not in Job.State.values:
            raise ApiError(400, {"state": f"must be one of {', '.join(Job.State.values)}"})
        rows = rows.filter(state=state)
    owner = request.GET.get("owner")
    if owner is not None:
        rows = rows.filter(owner__username=owner)
    page = _page(request, rows)
    progress = progress_of(list(page.object_list))
    return JsonResponse(_listing(page, [_job(request, job, progress[job.pk]) for job in page.object_list]))


def _submission(request: HttpRequest) -> Submission:
    """A submission from multipart form data (a file) or a JSON body (a spec or the file's text)."""
    _refuse_oversized(request)
    if request.content_type == "multipart/form-data":
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(400, {"file": "send the task-set file as the multipart field 'file'"})
        options = {key: request.POST.get(key) for key in OPTION_FIELDS if request.POST.get(key) not in (None, "")}
        if "monitors" in options:
            options["monitors"] = [name for value in request.POST.getlist("monitors") for name in value.split(",") if name]
        if "notify" in options:
            options["notify"] = [url for value in request.POST.getlist("notify") for url in value.split() if url]
        return _options(upload.read(), upload.name, options, from_form=True)
    if request.content_type != "application/json":
        raise ApiError(415, {"content_type": "send application/json or multipart/form-data"})
    body = json_body(request)
    unknown = sorted(set(body) - OPTION_FIELDS - {"spec", "file", "filename"})
    if unknown:
        raise ApiError(400, {key: "unknown field" for key in unknown})
    data, filename = _file_of(body)
    return _options(data, filename, {k: v for k, v in body.items() if k in OPTION_FIELDS}, from_form=False)


def _refuse_oversized(request: HttpRequest) -> None:
    """Refuse a body longer than a task-set file and its options can be
    before reading any of it: Django would spool a 100 MB upload to disk first."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the file's limit plus room for the options
    if length > limit:
        key = "file" if request.content_type == "multipart/form-data" else "body"
        raise ApiError(413, {key: size_message(length, limit)})


def _file_of(body: dict) -> tuple[bytes, str]:
    filename = body.get("filename", "")
    if filename_error(filename):
        raise ApiError(400, {"filename": filename_error(filename)})
    if ("spec" in body) == ("file" in body):
        raise ApiError(400, {"spec": "send either 'spec' (the task-set file as a JSON object) or 'file' (its text)"})
    if "spec" in body:
        if not isinstance(body["spec"], dict):
            raise ApiError(400, {"spec": "must be a JSON object (the task-set file)"})
        return json.dumps(body["spec"]).encode(), filename or "spec.json"
    if not isinstance(body["file"], str):
        raise ApiError(400, {"file": "must be a string (the file's text)"})
    try:
        return body["file"].encode(), filename
    except UnicodeEncodeError as error:
        raise ApiError(400, {"file": f"an unpaired surrogate at character {error.start} is not text"}) from None


def _options(data: bytes, filename: str, raw: dict, *, from_form: bool) -> Submission:
    errors: dict[str, str] = {}

    def integer(key: str, default, nullable: bool = False):
        if key not in raw or (nullable and raw[key] is None):
            return default
        value = raw[key]
        if from_form and isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            errors[key] = "must be an integer"
            return default
        return value

    def string(key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            errors[key] = "must be a string"
            return None
        return value

    offset, tries, priority = integer("offset", 0), integer("tries", None, nullable=True), integer("priority", 0)
    time_limit = integer("time_limit", None, nullable=True)
    target, name = string("target"), string("name") or ""
    admission = raw.get("admission")
    if from_form and isinstance(admission, str):
        try:
            admission = load_json(admission)
        except DepthError as error:
            errors["admission"], admission = str(error), None
        except ValueError:
            errors["admission"] = "must be a JSON object"
    if admission is not None and not isinstance(admission, dict):
        errors["admission"] = "must be an object of names to numbers or short strings"
    monitors = raw.get("monitors", [])
    if not isinstance(monitors, list) or not all(isinstance(m, str) for m in monitors):
        errors["monitors"] = "must be a list of monitor names"
        monitors = []
    notify = raw.get("notify", [])
    if not isinstance(notify, list) or not all(isinstance(url, str) for url in notify):
        errors["notify"] = "must be a list of URLs"
        notify = []
    notify_bad = raw.get("notify_bad", False)
    if from_form and isinstance(notify_bad, str) and notify_bad.lower() in ("true", "false", "1", "0", "on"):
        notify_bad = notify_bad.lower() in ("true", "1", "on")
    if not isinstance(notify_bad, bool):
        errors["notify_bad"] = "must be true or false"
    if errors:
        raise ApiError(400, errors)
    return Submission(data=data, filename=filename, target=target, name=name, offset=offset, tries=tries,
                      priority=priority, admission=admission if isinstance(admission, dict) else None, monitors=monitors,
                      notify=notify, time_limit=time_limit, notify_bad=notify_bad)


def _submission_error(error: SubmissionError) -> ApiError:
    errors = dict(error.option_errors)
    if error.file_errors:
        errors["file"] = "; ".join(f"{path}: {message}" for path, message in error.file_errors[:5]) + (
            f" (and {len(error.file_errors) - 5} more)" if len(error.file_errors) > 5 else "")
    return ApiError(400, errors, file_errors=[{"path": p, "message": m} for p, m in error.file_errors])


# -- jobs --------------------------------------------------------------------------


def _job(request: HttpRequest, job: Job, progress=None) -> dict:
    progress = progress or add_rate(job, progress_of([job])[job.pk])
    return {
        "id": job.pk, "name": job.name, "state": job.state, "target": job.target.name,
        "owner": job.owner.username if job.owner else None, "source_name": job.source_name,
        "variant_count": job.variant_count, "offset": job.offset, "tries": job.tries, "priority": job.priority,
        "admission": job.admission, "monitors": job.monitors, "time_limit_s": job.time_limit_s,
        "notify_bad": job.notify_bad,
        "notify": [{"url": n.url, "event": n.event, "state": n.state, "attempts": n.attempts, "sent_at": _iso(n.sent_at),
                    "last_error": n.last_error} for n in job.notifications.all()],
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
        "progress": progress.as_dict(),
        "links": {
            "self": request.build_absolute_uri(reverse("api-job", args=[job.pk])),
            "page": request.build_absolute_uri(reverse("job", args=[job.pk])),
            "tasksets": request.build_absolute_uri(reverse("api-job-tasksets", args=[job.pk])),
            "exports": {fmt: request.build_absolute_uri(reverse("api-job-export", args=[job.pk, fmt]))
                        for fmt in exports.FORMATS},
        },
    }


@api("GET")
def job(request: HttpRequest, job_id: int) -> JsonResponse:
    job = _get(Job.objects.select_related("target", "owner"), job_id)
    return JsonResponse({**_job(request, job), "contents": JobContent.of_job(job.pk)})


def _changeable(request: HttpRequest, job_id: int, what: str) -> Job:
    job = _get(Job.objects.select_related("target", "owner"), job_id)
    if not may_change(request.user, job):
        raise ApiError(403, {"authorization": f"only its owner or staff may {what} a job"})
    return job


@api("POST")
def job_cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    job = _changeable(request, job_id, "cancel")
    now = _fields(request, {"now"}).get("now", False)
    if not isinstance(now, bool):
        raise ApiError(400, {"now": "must be true or false"})
    cancelled = job.cancel(now=now)
    if cancelled:
        record(user_actor(request.user), "job-cancel", f"job {job.pk}", {"now": now})
    return JsonResponse({"cancelled": cancelled, "job": _job(request, job)})


@api("POST")
def job_priority(request: HttpRequest, job_id: int) -> JsonResponse:
    job = _changeable(request, job_id, "change the priority of")
    body = _fields(request, {"priority"})
    if "priority" not in body:
        raise ApiError(400, {"priority": "required"})
    before = job.priority
    try:
        changed = job.set_priority(body["priority"])
    except ValidationError as error:
        raise ApiError(400, {key: " ".join(messages) for key, messages in error.message_dict.items()}) from None
    if not changed:
        raise ApiError(409, {"state": f"job {job.pk} has ended ({job.state}): its priority no longer matters"})
    record(user_actor(request.user), "job-priority", f"job {job.pk}", {"priority": [before, job.priority]})
    return JsonResponse(_job(request, job))


@api("POST")
def job_resubmit(request: HttpRequest, job_id: int) -> JsonResponse:
    try:
        new = resubmit_job(_get(Job.objects.all(), job_id), owner=request.user)
    except ValidationError as error:
        raise ApiError(400, {key: " ".join(messages) for key, messages in error.message_dict.items()}) from None
    record(user_actor(request.user), "job-resubmit", f"job {job_id}", {"new_job": new.pk})
    return JsonResponse(_job(request, Job.objects.select_related("target", "owner").get(pk=new.pk)), status=201)


@api("GET")
def job_export(request: HttpRequest, job_id: int, format: str):
    """The same bytes as the job page's export link, to a token alone: streamed
    CSV (or Parquet), or an SQLite file."""
    job = _get(Job.objects.all(), job_id)
    if format not in exports.FORMATS:
        raise ApiError(404, {"format": f"unknown export format; use {', '.join(exports.FORMATS)}"})
    return export_response(job, format)


@api("GET")
def job_tasksets(request: HttpRequest, job_id: int) -> JsonResponse:
    job = _get(Job.objects.all(), job_id)
    rows = TaskSet.objects.filter(job=job).order_by("variant")
    for key, values in (("state", TaskSet.State.values), ("outcome", TaskSet.Outcome.values)):
        value = request.GET.get(key)
        if value is not None:
            if value not in values:
                raise ApiError(400, {key: f"must be one of {', '.join(values)}"})
            rows = rows.filter(**{key: value})
    try:
        _, by_labels = label_filters(request.GET, strict=True)
    except FilterError as error:
        raise ApiError(400, {error.field: error.message}) from None
    page = _page(request, by_labels(rows))
    return JsonResponse(_listing(page, [_taskset(request, ts) for ts in page.object_list]))


# -- task-sets -------------------------------------------------------------------


def _taskset(request: HttpRequest, ts: TaskSet) -> dict:
    miss = ts.first_miss
    return {
        "id": ts.pk, "job": ts.job_id, "variant": ts.variant, "state": ts.state, "outcome": ts.outcome or None,
        "attempts": ts.attempts, "losses": ts.losses, "last_error": ts.last_error, "machine": ts.machine_id,
        "first_miss": None if miss is None else miss.as_dict(),
        "started_at": _iso(ts.started_at), "ended_at": _iso(ts.ended_at), "analysis": ts.analysis,
        "url": request.build_absolute_uri(reverse("api-taskset", args=[ts.pk])),
    }


@api("GET")
def taskset(request: HttpRequest, taskset_id: int) -> JsonResponse:
    ts = _get(TaskSet.objects.all(), taskset_id)
    tasks = list(ts.tasks.all())
    task_ids = {task.pk: task.task_id for task in tasks}
    taskjobs = list(TaskJob.objects.filter(taskset=ts).order_by("task__task_id", "job_number")[:MAX_TASKJOBS + 1])
    attempts = ts.attempt_set.order_by("number", "started_at")
    return JsonResponse({
        **_taskset(request, ts),
        "tasks": [task.as_dict() for task in tasks],
        "taskjobs": [{"task": task_ids[j.task_id], "job": j.job_number, "release_ms": j.release_ms,
                      "start_ms": j.start_ms, "end_ms": j.end_ms, "exit_type": j.exit_type,
                      "deadline_abs_ms": j.deadline_abs_ms, "deadline_met": j.deadline_met}
                     for j in taskjobs[:MAX_TASKJOBS]],
        "taskjobs_truncated": len(taskjobs) > MAX_TASKJOBS,
        "attempts": [{"number": a.number, "machine": a.machine_id, "started_at": _iso(a.started_at),
                      "ended_at": _iso(a.ended_at), "result": a.result or None, "error": a.error} for a in attempts],
    })


# -- campaigns -----------------------------------------------------------------------


def _campaign(request: HttpRequest, row: Campaign, report: dict | None = None) -> dict:
    data = {"id": row.pk, "name": row.name, "kind": row.kind, "state": row.state, "level": row.level,
            "target": row.target.name, "owner": row.owner.username if row.owner else None, "seed": row.seed,
            "last_error": row.last_error, "created_at": _iso(row.created_at), "ended_at": _iso(row.ended_at),
            "url": request.build_absolute_uri(reverse("api-campaign", args=[row.pk])),
            "page": request.build_absolute_uri(reverse("campaign", args=[row.pk]))}
    if report is not None:
        data["params"] = report["params"]
        data["levels"] = [{**{key: level[key] for key in ("level", "job", "job_state", "sets", "candidates",
                                                             "finished", "schedulable", "successful", "progress")},
                           "job_url": request.build_absolute_uri(reverse("api-job", args=[level["job"]]))
                           if level["job"] else None} for level in report["levels"]]
    return data


@api("GET", "POST")
def campaigns(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        body = _fields(request, {"kind", *campaign_options.RANDOM_OPTIONS, *campaign_options.GROW_OPTIONS,
                                 *campaign_options.COMMON_OPTIONS})
        options = {key: value for key, value in body.items() if key != "kind"}
        try:
            row = campaign_options.start(body.get("kind"), options, owner=request.user)
        except generate.ParameterError as error:
            raise ApiError(400, {error.option.lstrip("-").replace("-", "_"): str(error).split(": ", 1)[1]}) from None
        except (TaskFileError, ValidationError) as error:
            raise ApiError(400, {"options": f"the generated task-sets were refused: {error}"}) from None
        return JsonResponse(_campaign(request, row, campaign_services.status(row)), status=201)
    rows = Campaign.objects.select_related("target", "owner").order_by("-pk")
    page = _page(request, rows)
    return JsonResponse(_listing(page, [_campaign(request, row) for row in page.object_list]))


@api("GET")
def campaign(request: HttpRequest, campaign_id: int) -> JsonResponse:
    row = _get(Campaign.objects.select_related("target", "owner"), campaign_id)
    return JsonResponse(_campaign(request, row, campaign_services.status(row)))


def _changeable_campaign(request: HttpRequest, campaign_id: int) -> Campaign:
    row = _get(Campaign.objects.select_related("target", "owner"), campaign_id)
    if not may_change(request.user, row):
        raise ApiError(403, {"authorization": "only its owner or staff may stop or continue a campaign"})
    return row


@api("POST")
def campaign_stop(request: HttpRequest, campaign_id: int) -> JsonResponse:
    row = _changeable_campaign(request, campaign_id)
    cancel_level = _fields(request, {"cancel_level"}).get("cancel_level", True)
    if not isinstance(cancel_level, bool):
        raise ApiError(400, {"cancel_level": "must be true or false"})
    stopped = campaign_services.stop(row, cancel_level=cancel_level)
    if stopped:
        record(user_actor(request.user), "campaign-stop", f"campaign {row.pk}", {"cancel_level": cancel_level})
    return JsonResponse({"stopped": stopped, "campaign": _campaign(request, row, campaign_services.status(row))})


@api("POST")
def campaign_continue(request: HttpRequest, campaign_id: int) -> JsonResponse:
    row = _changeable_campaign(request, campaign_id)
    _fields(request, set())
    continued = campaign_services.resume(row)
    if continued:
        record(user_actor(request.user), "campaign-continue", f"campaign {row.pk}")
    return JsonResponse({"continued": continued, "campaign": _campaign(request, row, campaign_services.status(row))})


# -- the distributor ---------------------------------------------------------------


@api("GET")
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse(overview())


@api("POST", staff=True)
def distributor(request: HttpRequest) -> JsonResponse:
    body = json_body(request)
    unknown = sorted(set(body) - {"max_machines"})
    if unknown:
        raise ApiError(400, {key: "unknown field" for key in unknown})
    if "max_machines" not in body:
        raise ApiError(400, {"max_machines": "required"})
    try:
        reconciler.set_max_machines_for(user_actor(request.user), body["max_machines"])
    except ValidationError as error:
        raise ApiError(400, {key: " ".join(value) for key, value in error.message_dict.items()}) from None
    return JsonResponse(overview())


@api("POST", staff=True)
def control(request: HttpRequest, action: str) -> JsonResponse:
    if action not in reconciler.CONTROLS:
        raise ApiError(404, {"action": f"unknown action; use {', '.join(reconciler.CONTROLS)}"})
    result = reconciler.control(action, user_actor(request.user))
    return JsonResponse({"action": action, "machines": result, "status": overview()})
