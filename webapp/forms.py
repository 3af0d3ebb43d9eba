"""Forms: input types and the messages people see; the rules themselves live
in distributor (task-set files, job options, target settings). The target
form is distributor.forms.TargetForm: the admin uses it too."""
from __future__ import annotations

import hashlib
import json
import uuid

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from distributor.models import Binary, BootImage, Target
from distributor.models.targets import BINARY_NAME
from distributor.monitors import MONITORS

# A file that failed is put back into the text box so it can be fixed in
# place; past this size the browser would struggle, and the user re-uploads.
ECHO_MAX_BYTES = 512 * 1024


class SubmitForm(forms.Form):
    file = forms.FileField(required=False, help_text="JSON, YAML or Genode XML")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"class": "code", "spellcheck": "false"}),
                           label="…or paste the file", strip=False)
    filename = forms.CharField(required=False, widget=forms.HiddenInput)
    target = forms.ChoiceField(help_text="the pool of machines that runs it")
    name = forms.CharField(required=False, max_length=200, help_text="default: the file's name field")
    offset = forms.IntegerField(initial=0, help_text="skip this many variants")
    tries = forms.IntegerField(required=False, help_text="attempts before a task-set is bad (default from settings)")
    priority = forms.IntegerField(initial=0, help_text="higher runs first; equal priorities run in order")
    admission = forms.CharField(required=False, label="Admission control",
                                widget=forms.Textarea(attrs={"rows": 3, "class": "code", "placeholder": '{"goal": "utilisation", "max": 0.9}'}),
                                help_text="a JSON object sent to the target with OPTIMIZE")
    monitors = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                         choices=[(name, name) for name in sorted(MONITORS)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(Target.objects.order_by("-is_default", "name").values_list("name", flat=True))
        self.fields["target"].choices = [(name, name) for name in names] or [("", "the default (SimSo)")]
        self.fields["target"].required = bool(names)

    def clean_admission(self) -> dict | None:
        raw = self.cleaned_data["admission"].strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValidationError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        return value

    def clean(self):
        data = super().clean()
        upload: UploadedFile | None = data.get("file")
        if upload:
            data["content"] = upload.read(settings.TASKSET_FILE_MAX_BYTES + 1)
            data["filename"] = upload.name
        elif data.get("text", "").strip():
            data["content"] = data["text"].encode()
        else:
            self.add_error("file", "choose a task-set file or paste its content")
        return data

    def echo_content(self) -> None:
        """Put an uploaded file back into the text box for the next render."""
        content = self.cleaned_data.get("content")
        if not self.cleaned_data.get("file") or content is None or len(content) > ECHO_MAX_BYTES:
            return
        try:
            text = content.decode()
        except UnicodeDecodeError:
            return
        self.data = self.data.copy()
        self.data["text"] = text
        self.data["filename"] = self.cleaned_data["filename"]


class _UploadForm(forms.Form):
    """A stored file under a generated name, with its checksum and size."""

    model: type[Binary] | type[BootImage]
    max_bytes_setting = ""
    folder = ""
    file = forms.FileField()

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        limit = getattr(settings, self.max_bytes_setting)
        if upload.size > limit:
            raise ValidationError(f"is {upload.size:,} bytes; the limit is {limit:,} bytes")
        if upload.size == 0:
            raise ValidationError("is empty")
        return upload

    def clean_name(self) -> str:
        return self.cleaned_data.get("name") or ""

    @transaction.atomic
    def save(self, user):
        upload = self.cleaned_data["file"]
        name = self.cleaned_data["name"]
        digest = hashlib.sha256()
        for chunk in upload.chunks():
            digest.update(chunk)
        upload.seek(0)
        item = self.model.objects.select_for_update().filter(name=name).first() or self.model(name=name)
        old_file = item.file.name if item.pk else ""
        item.sha256, item.size, item.uploaded_by = digest.hexdigest(), upload.size, user
        item.file.save(f"{uuid.uuid4().hex}", upload, save=False)
        item.save()
        if old_file:
            transaction.on_commit(lambda: item.file.storage.delete(old_file))
        return item


class BinaryForm(_UploadForm):
    model = Binary
    max_bytes_setting = "BINARY_MAX_BYTES"
    name = forms.CharField(required=False, max_length=64, help_text="default: the file's name; at most 15 bytes")

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        name = data.get("name") or (upload.name if upload else "")
        if upload is not None or data.get("name"):
            if not BINARY_NAME.fullmatch(name) or len(name.encode()) > 15:
                self.add_error("name", f"{name!r}: 1-15 bytes of letters, digits, '.', '_' or '-' "
                                       "(Genode keeps 15 bytes of a binary's name)")
            data["name"] = name
        return data


class ImageForm(_UploadForm):
    model = BootImage
    max_bytes_setting = "IMAGE_MAX_BYTES"
    name = forms.CharField(required=False, max_length=100, help_text="default: the file's name")

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        data["name"] = (data.get("name") or (upload.name if upload else ""))[:100]
        return data


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the token is for, e.g. 'campaign script'")
