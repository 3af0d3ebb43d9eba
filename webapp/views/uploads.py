"""Task binaries and boot images: listed for everyone, uploaded by staff.

Files are stored under generated names (never the uploaded name, which could
name a path) with their SHA-256, so a user can check what a target runs.
"""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from distributor.models import Binary, BootImage
from webapp.access import login_required, staff_required
from webapp.forms import BinaryForm, ImageForm


def _page(request: HttpRequest, binary_form=None, image_form=None, status: int = 200) -> HttpResponse:
    return render(request, "web/files.html", {
        "binaries": Binary.objects.select_related("uploaded_by").order_by("name"),
        "images": BootImage.objects.select_related("uploaded_by").order_by("name"),
        "binary_form": binary_form or BinaryForm(), "image_form": image_form or ImageForm(),
    }, status=status)


@login_required
def files(request: HttpRequest) -> HttpResponse:
    return _page(request)


@staff_required
@require_POST
def upload_binary(request: HttpRequest) -> HttpResponse:
    form = BinaryForm(request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, binary_form=form, status=400)
    binary = form.save(request.user)
    messages.success(request, f"Stored binary '{binary.name}' ({binary.size:,} bytes, sha256 {binary.sha256[:12]}…).")
    return redirect("binaries")


@staff_required
@require_POST
def upload_image(request: HttpRequest) -> HttpResponse:
    form = ImageForm(request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, image_form=form, status=400)
    image = form.save(request.user)
    messages.success(request, f"Stored boot image '{image.name}' ({image.size:,} bytes, sha256 {image.sha256[:12]}…).")
    return redirect("binaries")
