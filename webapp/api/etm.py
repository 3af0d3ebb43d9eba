"""API of execution-time models (docs/etm.md): list, show, import, export,
fit, calibrate; relabel a job. (A target's ``etm`` setting is edited through
webapp/api/targets.py, whose TargetForm checks the name.)

Reading is for everyone logged in; importing, fitting and calibrating are
staff's; relabelling a job is its owner's or staff's. Each change is
recorded in the audit trail.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse

from distributor import calibration
from distributor.audit import record, user_actor
from distributor.calibration import CalibrationError
from distributor.labels import REQUEST_RELABEL_MAX, relabel, selection
from distributor.models import EtmModel, EtmVersion, Job, Target
from distributor.models.etm import MODEL_NAME
from sessions.etm import EtmError
from webapp.access import may_change
from webapp.api.auth import ApiError, api, json_body

MAX_FIT_JOBS = 100
MAX_ID = 2**63 - 1


def _body(request: HttpRequest, allowed: set[str]) -> dict:
    if request.content_type != "application/json":
        raise ApiError(415, {"content_type": "send application/json"})
    body = json_body(request)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, {key: "unknown field" for key in unknown})
    return body


def _model(name: str) -> EtmModel:
    model = EtmModel.named(name) if MODEL_NAME.fullmatch(name) or name == "default" else None
    if model is None:
        raise ApiError(404, {"name": f"no execution-time model named {name[:80]!r}"})
    return model


def _version_json(version: EtmVersion) -> dict:
    return {"version": version.version, "note": version.note, **version.provenance, "document": version.document}


def _validation(error: ValidationError) -> ApiError:
    return ApiError(400, {key: " ".join(messages) for key, messages in error.message_dict.items()})


@api("GET", "POST")
def models(request: HttpRequest) -> JsonResponse:
    """GET: every model's summary. POST (staff): import a model document as the next version of its name."""
    if request.method == "GET":
        return JsonResponse({"results": [calibration.summary(m) for m in EtmModel.objects.order_by("name")]})
    if not request.user.is_staff:
        raise ApiError(403, {"authorization": "only staff may import a model"})
    body = _body(request, {"name", "document"})
    document = body.get("document")
    if not isinstance(document, dict):
        raise ApiError(400, {"document": "must be a JSON object (a model as etm export writes it)"})
    name = body.get("name", document.get("name"))
    if not isinstance(name, str):
        raise ApiError(400, {"name": "give name, or a name field in the document"})
    try:
        version = EtmModel.add_version(name, {**document, "name": name, "version": 1})
    except ValidationError as error:
        raise _validation(error) from None
    record(user_actor(request.user), "etm-import", str(version))
    return JsonResponse({"name": version.model.name, **_version_json(version)}, status=201)


@api("GET")
def model(request: HttpRequest, name: str) -> JsonResponse:
    found = _model(name)
    versions = [_version_json(v) for v in found.versions.order_by("-version")]
    return JsonResponse({**calibration.summary(found), "versions": versions})


@api("GET")
def model_export(request: HttpRequest, name: str) -> JsonResponse:
    found = _model(name)
    number = request.GET.get("version")
    if number is None:
        version = found.latest
    else:
        if not number.isascii() or not number.isdigit() or len(number) > 9:
            raise ApiError(400, {"version": "must be a whole number ≥ 1"})
        version = found.versions.filter(version=int(number)).first()
    if version is None:
        raise ApiError(404, {"version": f"{found.name} has no version {number}"})
    response = JsonResponse(version.document)
    response["Content-Disposition"] = f'attachment; filename="{found.name}-v{version.version}.json"'
    return response


@api("POST", staff=True)
def model_fit(request: HttpRequest, name: str) -> JsonResponse:
    body = _body(request, {"jobs"})
    jobs = body.get("jobs")
    if (not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_FIT_JOBS
            or not all(isinstance(j, int) and not isinstance(j, bool) and 1 <= j <= MAX_ID for j in jobs)):
        raise ApiError(400, {"jobs": f"a list of 1 to {MAX_FIT_JOBS} job ids"})
    try:
        version = calibration.fit(sorted(set(jobs)), name)
    except CalibrationError as error:
        raise ApiError(400, {error.field if error.field != "job" else "jobs": error.message}) from None
    except ValidationError as error:
        raise _validation(error) from None
    record(user_actor(request.user), "etm-fit", str(version), {"jobs": version.jobs})
    return JsonResponse(calibration.fitted_line(version), status=201)


@api("POST", staff=True)
def model_calibrate(request: HttpRequest, name: str) -> JsonResponse:
    """Submit a calibration job; its end fits the next version of ``name``."""
    body = _body(request, {"target", "pkg", "args", "jobs", "period"})
    target = Target.objects.filter(name=body.get("target")).first() if isinstance(body.get("target"), str) else None
    if target is None:
        raise ApiError(400, {"target": "name an existing target"})
    pkgs = body.get("pkg")
    if isinstance(pkgs, str):
        pkgs = [pkg.strip() for pkg in pkgs.split(",") if pkg.strip()]
    if not isinstance(pkgs, list) or not all(isinstance(p, str) for p in pkgs):
        raise ApiError(400, {"pkg": "a package name, a comma-separated list or a list of names"})
    jobs, period = body.get("jobs", 5), body.get("period")
    if isinstance(jobs, bool) or not isinstance(jobs, int):
        raise ApiError(400, {"jobs": "a whole number"})
    if period is not None and (isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= 10**9):
        raise ApiError(400, {"period": "a whole number of ms, 1 to 10^9"})
    try:
        request_row = calibration.submit(target, pkgs, calibration.parse_args(str(body.get("args", ""))), jobs, name,
                                         period_ms=period, owner=request.user)
    except CalibrationError as error:
        raise ApiError(400, {error.field: error.message}) from None
    except ValidationError as error:
        raise _validation(error) from None
    record(user_actor(request.user), "etm-calibrate", f"target {target.name}",
           {"model": name, "pkg": pkgs, "args": body.get("args"), "jobs": jobs, "job": request_row.job_id})
    return JsonResponse({"calibration": request_row.pk, "job": request_row.job_id, "name": name,
                         "target": target.name, "fitted": None}, status=202)


@api("POST")
def job_relabel(request: HttpRequest, job_id: int) -> JsonResponse:
    """Relabel a job's ended task-sets with a stored model (owner or staff)."""
    job = Job.objects.filter(pk=job_id).first() if job_id <= MAX_ID else None
    if job is None:
        raise ApiError(404, {"job": f"no job {job_id}"})
    if not may_change(request.user, job):
        raise ApiError(403, {"authorization": "only its owner or staff may relabel a job"})
    etm = _body(request, {"etm"}).get("etm")
    if etm is not None and not isinstance(etm, str):
        raise ApiError(400, {"etm": "the name of a stored model (or leave it out: the target's own)"})
    too_many = _too_many_to_relabel(job)
    if too_many:
        raise ApiError(400, {"job": too_many})
    try:
        done = relabel([job.pk], etm)
    except EtmError as error:
        raise ApiError(400, {"etm": str(error)}) from None
    record(user_actor(request.user), "relabel", f"jobs {job.pk}",
           {"etm": etm, "tasksets": done.count, "used": sorted(f"{n} v{v}" for n, v in done.etms)})
    return JsonResponse({"job": job.pk, "relabelled": done.count,
                         "etm": [{"name": n, "version": v} for n, v in sorted(done.etms)]})


def _too_many_to_relabel(job: Job) -> str:
    count = selection([job.pk]).count()
    if count <= REQUEST_RELABEL_MAX:
        return ""
    return (f"{count:,} ended task-sets; a request relabels at most {REQUEST_RELABEL_MAX:,}: "
            f"python manage.py relabel --job {job.pk} --etm MODEL")
