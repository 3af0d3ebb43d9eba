"""Execution-time models on the web: the list, a model's page (versions,
targets using it, per package the measured points and the line), a target's
Calibrate form (staff) and a job's Relabel button (owner or staff)."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from distributor import calibration
from distributor.audit import record, user_actor
from distributor.calibration import CalibrationError
from distributor.forms import TargetForm
from distributor.labels import REQUEST_RELABEL_MAX, relabel, selection
from distributor.models import EtmModel, Job, Target
from distributor.models.etm import MODEL_NAME
from sessions.etm import EtmError
from webapp.access import login_required, may_change, staff_required
from webapp.etm_plot import package_svg
from webapp.params import whole_number


@login_required
def models(request: HttpRequest) -> HttpResponse:
    rows = [calibration.summary(model) for model in EtmModel.objects.order_by("name")]
    return render(request, "web/etms.html", {"models": rows})


def _model_or_404(name: str) -> EtmModel:
    model = EtmModel.named(name) if MODEL_NAME.fullmatch(name) or name == "default" else None
    if model is None:
        raise Http404("no such execution-time model")
    return model


def _shown_version(model: EtmModel, request: HttpRequest):
    number = whole_number(request.GET.get("version"))
    version = model.versions.filter(version=number).first() if number else model.latest
    if version is None:
        raise Http404("no such version")
    return version


@login_required
def model(request: HttpRequest, name: str) -> HttpResponse:
    found = _model_or_404(name)
    version = _shown_version(found, request)
    packages = [
        {"pkg": pkg, "term": term, "has_line": "base_ms" in term, "points": sorted(((int(a), p) for a, p in (term.get("points") or {}).items()))}
        for pkg, term in sorted(version.document.get("packages", {}).items())
    ]
    return render(request, "web/etm.html", {
        "model": found, "version": version, "versions": found.versions.order_by("-version"),
        "targets": calibration.targets_using(found), "packages": packages, "default": version.document["default"],
    })


@login_required
def plot(request: HttpRequest, name: str, pkg: str) -> HttpResponse:
    found = _model_or_404(name)
    version = _shown_version(found, request)
    term = version.document.get("packages", {}).get(pkg)
    if term is None:
        raise Http404("no such package in this version")
    response = HttpResponse(package_svg(found.name, version.version, pkg, term), content_type="image/svg+xml")
    if request.GET.get("download") == "1":
        response["Content-Disposition"] = f'attachment; filename="{found.name}-v{version.version}-{pkg}.svg"'
    return response


@staff_required
@require_POST
def calibrate(request: HttpRequest, target_id: int) -> HttpResponse:
    target = get_object_or_404(Target, pk=target_id)
    post = request.POST
    pkgs = [pkg.strip() for pkg in post.get("pkg", "").split(",") if pkg.strip()]
    jobs = whole_number(post.get("jobs")) or 0
    try:
        request_row = calibration.submit(target, pkgs, calibration.parse_args(post.get("args", "")), jobs,
                                         post.get("name", "").strip(), owner=request.user)
    except CalibrationError as error:
        return _calibrate_form(request, target, {error.field: error.message})
    except ValidationError as error:
        return _calibrate_form(request, target, {k: " ".join(v) for k, v in error.message_dict.items()})
    record(user_actor(request.user), "etm-calibrate", f"target {target.name}",
           {"model": request_row.model_name, "pkg": pkgs, "args": post.get("args"), "jobs": jobs,
            "job": request_row.job_id})
    messages.success(request, f"Calibration job #{request_row.job_id} queued: when it ends, its measurements "
                              f"become the next version of {request_row.model_name}.")
    return redirect("job", request_row.job_id)


def _calibrate_form(request: HttpRequest, target: Target, errors: dict) -> HttpResponse:
    return render(request, "web/target_form.html", {
        "form": TargetForm(instance=target), "target": target, "calibrate_errors": errors,
        "calibrate": request.POST}, status=400)


@require_POST
@login_required
def relabel_job(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    if not may_change(request.user, job):
        raise PermissionDenied("only its owner or staff may relabel a job")
    name = request.POST.get("etm", "").strip() or None
    count = selection([job.pk]).count()
    if count > REQUEST_RELABEL_MAX:
        messages.error(request, f"Nothing relabelled: {count:,} ended task-sets; a page relabels at most "
                                f"{REQUEST_RELABEL_MAX:,}. Use python manage.py relabel --job {job.pk} --etm MODEL.")
        return redirect("job", job.pk)
    try:
        done = relabel([job.pk], name)
    except EtmError as error:
        messages.error(request, f"Nothing relabelled: etm: {error}")
        return redirect("job", job.pk)
    used = ", ".join(f"{n} v{v}" for n, v in sorted(done.etms)) or "none"
    record(user_actor(request.user), "relabel", f"jobs {job.pk}", {"etm": name, "tasksets": done.count, "used": used})
    messages.success(request, f"Relabelled {done.count:,} task-sets with {used}.")
    return redirect("job", job.pk)
