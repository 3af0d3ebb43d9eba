"""Task binaries and boot images: listed for everyone, uploaded by staff.

The content is stored in the database by its SHA-256 (never under a name a
user gave, which could name a path), so every host's machines reach it and a
user can check what a target runs.
Both kinds go through one form and one view; the URL names the kind.
"""
from __future__ import annotations

import re

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from distributor.models import Binary, Blob, BootImage
from webapp.access import login_required, staff_required
from webapp.forms import UploadForm
from webapp.limits import UPLOADS, body_limit

KINDS = {"binary": Binary, "image": BootImage}
SHA256 = re.compile(r"[0-9a-f]{64}")


def _page(request: HttpRequest, bound: dict[str, UploadForm] | None = None, status: int = 200) -> HttpResponse:
    forms = {kind: UploadForm(model) for kind, model in KINDS.items()} | (bound or {})
    return render(request, "web/files.html", {
        "binaries": Binary.objects.select_related("uploaded_by").order_by("name"),
        "images": BootImage.objects.select_related("uploaded_by").order_by("name"),
        "binary_form": forms["binary"], "image_form": forms["image"],
    }, status=status)


@login_required
def files(request: HttpRequest) -> HttpResponse:
    return _page(request)


@body_limit(*UPLOADS)
@staff_required
@require_POST
def upload(request: HttpRequest, kind: str) -> HttpResponse:
    model = KINDS[kind]
    form = UploadForm(model, request.POST, request.FILES)
    if not form.is_valid():
        return _page(request, {kind: form}, status=400)
    item = form.save(request.user)
    messages.success(request, f"Stored {model._meta.verbose_name} '{item.name}' ({item.size:,} bytes, "
                              f"sha256 {item.sha256[:12]}…).")
    return redirect("binaries")


@login_required
def content(request: HttpRequest, sha256: str) -> HttpResponse:
    """An uploaded content by its checksum, as a download: what a job ran
    (its page links each of its contents), streamed a chunk at a time."""
    blob = Blob.objects.filter(pk=sha256).first() if SHA256.fullmatch(sha256) else None
    if blob is None:
        raise Http404(f"no content with sha256 {sha256} is stored (never uploaded, or purged)")
    response = StreamingHttpResponse(blob.chunks(), content_type="application/octet-stream")
    response["Content-Length"] = str(blob.size)
    response["Content-Disposition"] = f'attachment; filename="{blob.sha256}"'
    return response
