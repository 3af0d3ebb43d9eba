"""Target pools: everyone may read them, staff edit them (validated by the
session kind's own check, the same as `manage.py target add`)."""
from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from distributor.audit import form_changes, record, user_actor
from distributor.forms import TargetForm
from distributor.models import Job, Machine, Target
from webapp.access import login_required, staff_required


@login_required
def targets(request: HttpRequest) -> HttpResponse:
    rows = Target.objects.annotate(
        live=Count("machines", filter=Q(machines__state__in=Machine.LIVE_STATES), distinct=True),
        active_jobs=Count("jobs", filter=Q(jobs__state__in=Job.ACTIVE_STATES), distinct=True),
    ).order_by("-is_default", "name")
    return render(request, "web/targets.html", {"targets": rows})


@staff_required
def target_edit(request: HttpRequest, target_id: int | None = None) -> HttpResponse:
    target = get_object_or_404(Target, pk=target_id) if target_id else Target()
    form = TargetForm(request.POST or None, instance=target)
    if request.method == "POST":
        if form.is_valid():
            action, changes = "target-edit" if target.pk else "target-add", form_changes(form)
            saved = form.save()
            record(user_actor(request.user), action, saved.name, changes)
            messages.success(request, f"Saved target '{saved.name}'.")
            return redirect("targets")
        return render(request, "web/target_form.html", {"form": form, "target": target}, status=400)
    return render(request, "web/target_form.html", {"form": form, "target": target})
