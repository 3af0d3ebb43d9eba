"""Task binaries and boot images in the API: everyone lists them, staff
upload them as multipart/form-data (``file``, ``sha256``, optional ``name``).

The file is hashed while Django streams it to disk (a handler ahead of
Django's own), so a large image is read once on its way in; when the
client's ``sha256`` is not the file's, the answer is 400 naming ``sha256``
and nothing is stored. What is stored goes through the web's own form
(``webapp.forms.UploadForm``: size limit, the kind's naming rule) and
``Upload.store``, which alone decides where the bytes live.
"""
from __future__ import annotations

import hashlib
import re
from functools import wraps
from typing import Callable

from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, JsonResponse

from distributor.audit import record_upload, user_actor
from distributor.models import Binary, BootImage
from distributor.models.targets import Upload
from webapp.api.auth import ApiError, api
from webapp.api.common import iso, listing, page_of, require_staff
from webapp.forms import UploadForm
from webapp.limits import UPLOADS, body_limit

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class Sha256Handler(FileUploadHandler):
    """Hashes each uploaded file's bytes as they pass to the next handler."""

    def __init__(self, request=None):
        super().__init__(request)
        self.digests: dict[str, list] = {}

    def new_file(self, field_name, *args, **kwargs) -> None:
        super().new_file(field_name, *args, **kwargs)
        self.digests.setdefault(field_name, []).append(hashlib.sha256())

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.digests[self.field_name][-1].update(raw_data)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or a temporary file) keeps the bytes

    def hexdigest(self, field_name: str) -> str:
        return self.digests[field_name][-1].hexdigest()


def hashing_uploads(view: Callable) -> Callable:
    """Put the hashing handler first, before anything reads the body (the
    ``api`` decorator's CSRF check of a session request does)."""
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if request.method == "POST":
            request.upload_handlers.insert(0, Sha256Handler(request))
        return view(request, *args, **kwargs)

    return wrapper


def as_dict(item: Upload) -> dict:
    return {"name": item.name, "sha256": item.sha256, "size": item.size, "uploaded_at": iso(item.uploaded_at),
            "uploaded_by": item.uploaded_by.username if item.uploaded_by else None}


def _listing_or_upload(request: HttpRequest, model: type[Upload]) -> JsonResponse:
    if request.method == "POST":
        require_staff(request, f"upload {model._meta.verbose_name_plural}")
        item, replaced = _store(request, model)
        return JsonResponse({**as_dict(item), "replaced": replaced}, status=200 if replaced else 201)
    page = page_of(request, model.objects.select_related("uploaded_by").order_by("name"))
    return JsonResponse(listing(page, [as_dict(item) for item in page.object_list]))


def _store(request: HttpRequest, model: type[Upload]) -> tuple[Upload, bool]:
    if request.content_type != "multipart/form-data":
        raise ApiError(415, {"content_type": "send multipart/form-data with 'file', 'sha256' and optionally 'name'"})
    if len(request.FILES.getlist("file")) > 1:
        raise ApiError(400, {"file": "send one file"})
    form = UploadForm(model, request.POST, request.FILES)
    errors = {} if form.is_valid() else {field: " ".join(messages) for field, messages in form.errors.items()}
    claimed = request.POST.get("sha256", "").strip()
    if not SHA256.fullmatch(claimed):
        errors["sha256"] = "required: the file's SHA-256 as 64 hexadecimal digits (sha256sum FILE)"
    if errors:
        raise ApiError(400, errors)
    actual = next(h for h in request.upload_handlers if isinstance(h, Sha256Handler)).hexdigest("file")
    if actual != claimed.lower():
        raise ApiError(400, {"sha256": f"does not match the file received (its SHA-256 is {actual}): "
                                      "nothing was stored; the file may have been damaged on the way"})
    item, replaced = model.store(form.cleaned_data["name"], form.cleaned_data["file"], request.user)
    record_upload(user_actor(request.user), item, replaced)
    return item, replaced


@body_limit(*UPLOADS)
@hashing_uploads
@api("GET", "POST")
def binaries(request: HttpRequest) -> JsonResponse:
    return _listing_or_upload(request, Binary)


@body_limit(*UPLOADS)
@hashing_uploads
@api("GET", "POST")
def images(request: HttpRequest) -> JsonResponse:
    return _listing_or_upload(request, BootImage)
