"""Forms: input types and the messages people see; the rules themselves live
in distributor (task-set files, job options, target settings). The target
form is distributor.forms.TargetForm: the admin uses it too."""
from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from distributor.audit import record_upload, user_actor
from distributor.models import Target
from distributor.queue import NAME_MAX
from distributor.taskfile import load_json
from distributor.models.targets import Upload
from distributor.queue import filename_error, notify_error
from distributor.monitors import MONITORS

# A file that failed is put back into the text box so it can be fixed in
# place; past this size the browser would struggle, and the user re-uploads.
ECHO_MAX_BYTES = 512 * 1024


class SubmitForm(forms.Form):
    file = forms.FileField(required=False, help_text="JSON, YAML or Genode XML")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"class": "code", "spellcheck": "false"}),
                           label="…or paste the file", strip=False)
    # The name of a file uploaded earlier, kept while its text is fixed in the box.
    filename = forms.CharField(required=False, widget=forms.HiddenInput, strip=False, validators=[])
    target = forms.ChoiceField(help_text="the pool of machines that runs it")
    name = forms.CharField(required=False, max_length=NAME_MAX, help_text="default: the file's name field")
    offset = forms.IntegerField(initial=0, help_text="skip this many variants")
    tries = forms.IntegerField(required=False, help_text="attempts before a task-set is bad (default from settings)")
    priority = forms.IntegerField(initial=0, help_text="higher runs first; equal priorities run in order")
    time_limit = forms.IntegerField(required=False, label="Time limit (s)",
                                    help_text="wall-clock seconds a task-set may run before its target counts as "
                                              "failed; empty: from the task-set's own periods, jobs and offsets")
    admission = forms.CharField(required=False, label="Admission control",
                                widget=forms.Textarea(attrs={"rows": 3, "class": "code", "placeholder": '{"goal": "utilisation", "max": 0.9}'}),
                                help_text="a JSON object sent to the target with OPTIMIZE")
    monitors = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                         choices=[(name, name) for name in sorted(MONITORS)])
    notify = forms.CharField(required=False, label="Notify when it ends",
                             widget=forms.Textarea(attrs={"rows": 2, "class": "code",
                                                          "placeholder": "https://hooks.example/distributor"}),
                             help_text="http(s) URLs (or e-mail addresses), one a line: each gets a JSON document when the job ends")
    notify_bad = forms.BooleanField(required=False, label="Also when task-sets turn bad",
                                    help_text="at most one message a minute, counting the task-sets turned bad since the last")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(Target.objects.order_by("-is_default", "name").values_list("name", flat=True))
        self.fields["target"].choices = [(name, name) for name in names] or [("", "the default (SimSo)")]
        self.fields["target"].required = bool(names)

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > settings.TASKSET_FILE_MAX_BYTES:
            raise ValidationError(f"is {size:,} bytes; the limit is {settings.TASKSET_FILE_MAX_BYTES:,} bytes")
        return text

    def clean_filename(self) -> str:
        """The API's rule: at most 255 characters, no control characters (a NUL
        was refused deep in the queue, with nothing marked on the page)."""
        value = self.cleaned_data["filename"]
        if filename_error(value):
            raise ValidationError(filename_error(value))
        return value

    def clean_notify(self) -> list[str]:
        urls = self.cleaned_data["notify"].split()
        if notify_error(urls):
            raise ValidationError(notify_error(urls))
        return urls

    def clean_admission(self) -> dict | None:
        raw = self.cleaned_data["admission"].strip()
        if not raw:
            return None
        try:
            value = load_json(raw)
        except json.JSONDecodeError as error:
            raise ValidationError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
        except ValueError as error:  # nested too deeply, or an integer of more than 4300 digits
            raise ValidationError(str(error)) from None
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


class UploadForm(forms.Form):
    """A task binary or a boot image: the kind's model names the size limit and
    checks the name (Upload.check_name), and stores the file (Upload.store)."""

    file = forms.FileField()
    # Longer than any kind allows, so that the kind's own rule names the fault.
    name = forms.CharField(required=False, max_length=100)

    def __init__(self, model: type[Upload], *args, **kwargs):
        # Both kinds' forms share a page: their fields need ids of their own.
        kwargs.setdefault("auto_id", f"id_{model._meta.model_name}_%s")
        super().__init__(*args, **kwargs)
        self.model = model
        self.fields["name"].help_text = model.name_help

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        self.model.check_size(upload.size)
        return upload

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if self.has_error("name") or (upload is None and not data.get("name")):
            return data
        data["name"] = self.model.name_for(data.get("name") or "", upload.name if upload else "")
        try:
            self.model.check_name(data["name"])
        except ValidationError as error:
            self.add_error(None, error)
        return data

    def save(self, user) -> Upload:
        """Store the file and record it in the audit trail as ``user``'s."""
        item, replaced = self.model.store(self.cleaned_data["name"], self.cleaned_data["file"], user)
        record_upload(user_actor(user), item, replaced)
        return item


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="what the token is for, e.g. 'campaign script'")


class _CampaignForm(forms.Form):
    """The campaign command's options as text (distributor.campaigns.options
    checks them and names the field at fault)."""

    name = forms.CharField(required=False, max_length=200)
    target = forms.ChoiceField(required=False, help_text="the pool that runs it")
    seed = forms.IntegerField(min_value=0, max_value=2**63 - 1, help_text="the same seed gives the same task-sets")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(Target.objects.order_by("-is_default", "name").values_list("name", flat=True))
        self.fields["target"].choices = [(name, name) for name in names] or [("", "the default (SimSo)")]

    def options(self) -> dict:
        return {key: value for key, value in self.cleaned_data.items() if value not in (None, "")}


class RandomCampaignForm(_CampaignForm):
    tasks = forms.IntegerField(min_value=1, max_value=64, help_text="tasks per set")
    utilisation = forms.CharField(help_text="total U of a set, or lo:hi drawn per set, e.g. 0.6:0.95")
    periods = forms.CharField(help_text="lo:hi[:step] in ms, or a list a,b,c")
    distribution = forms.ChoiceField(choices=[("loguniform", "loguniform"), ("uniform", "uniform")])
    pkg = forms.CharField(label="Packages", help_text="with weights, e.g. pi:3,tumatmul:1")
    count = forms.IntegerField(min_value=1, help_text="task-sets")
    jobs = forms.IntegerField(min_value=1, initial=5, help_text="numberofjobs of every task")
    priorities = forms.ChoiceField(choices=[("rm", "rate-monotonic"), ("edf", "EDF (all 128)"), ("random", "random")])


class GrowCampaignForm(_CampaignForm):
    singles = forms.IntegerField(min_value=1, help_text="distinct single tasks of level 1")
    max_size = forms.IntegerField(min_value=1, max_value=64, initial=4, help_text="largest set size")
    max_per_level = forms.IntegerField(min_value=1, initial=1000, help_text="a seeded sample above this")
    pkg = forms.CharField(label="Packages", help_text="e.g. pi,hey,tumatmul")
    quota = forms.CharField(required=False, help_text="e.g. 5M,10M")
    arg1 = forms.CharField(required=False, help_text="a value, a list a,b,c or a range lo:hi[:step]")
    priority = forms.CharField(required=False, help_text="e.g. 1:127")
    period = forms.CharField(required=False, help_text="ms, e.g. 100:1000:50")
    deadline = forms.CharField(required=False)
    numberofjobs = forms.CharField(required=False, help_text="e.g. 1:5")
