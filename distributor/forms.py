"""The target form, shared by the admin and the web pages: it lives here, below
both, so that the admin (part of distributor) never imports webapp."""
from __future__ import annotations

import json

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from distributor.models import EtmModel, Target
from distributor.taskfile import DepthError, json_depth, MAX_DEPTH
from sessions import SESSION_KINDS


class _DepthCheckingDecoder(json.JSONDecoder):
    """Django's JSONField parses with this: a document nested deeper than
    MAX_DEPTH is refused before it is parsed (the parser would recurse, and
    a RecursionError while re-rendering the form would be a 500)."""

    def decode(self, text, *args, **kwargs):
        if json_depth(text) > MAX_DEPTH:
            raise json.JSONDecodeError(str(DepthError()), text, 0)
        return super().decode(text, *args, **kwargs)


class SettingsField(forms.JSONField):
    """A JSON object typed into a form, refused with the cause when too deep."""

    def __init__(self, **kwargs):
        super().__init__(decoder=_DepthCheckingDecoder, **kwargs)

    def to_python(self, value):
        if isinstance(value, str) and json_depth(value) > MAX_DEPTH:
            raise ValidationError(str(DepthError(json_depth(value))), code="invalid")
        return super().to_python(value)


class TargetForm(forms.ModelForm):
    kind = forms.ChoiceField()
    settings = SettingsField(required=False, initial=dict,
                             widget=forms.Textarea(attrs={"rows": 6, "class": "code"}),
                             help_text="a JSON object; unknown keys are refused")
    addresses = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "class": "code"}),
                                help_text="one host:port per machine slot, one a line (empty for local kinds)")
    etm = forms.ChoiceField(required=False, label="Execution-time model",
                            help_text="what the analysis labels with (and SimSo simulates with); "
                                      "stored as the etm setting")

    class Meta:
        model = Target
        fields = ["name", "kind", "settings", "addresses", "host", "is_default"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read per form, not at import: a site's own kinds register when the app is ready.
        self.fields["kind"].choices = [(kind, kind) for kind in sorted(SESSION_KINDS)]
        self.fields["etm"].choices = [("", "as in settings (default genode-defaults)"),
                                      *((name, name) for name in EtmModel.objects.values_list("name", flat=True))]
        if self.instance.pk and not self.is_bound:
            self.initial["addresses"] = "\n".join(self.instance.addresses or [])
            etm = (self.instance.settings or {}).get("etm")
            self.initial["etm"] = etm if isinstance(etm, str) else ""

    def clean(self) -> dict:
        """The chosen model goes into the settings, where the target's check names it settings.etm."""
        cleaned = super().clean()
        if cleaned.get("etm") and isinstance(cleaned.get("settings"), dict):
            cleaned["settings"] = {**cleaned["settings"], "etm": cleaned["etm"]}
            self.instance.settings = cleaned["settings"]
        return cleaned

    def clean_settings(self) -> dict:
        value = self.cleaned_data.get("settings")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        return value

    def clean_addresses(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["addresses"].splitlines() if line.strip()]

    def _update_errors(self, errors: ValidationError) -> None:
        """The session's check names errors "settings.key"; show them on the field."""
        remapped: dict[str, list[str]] = {}
        by_key = errors.error_dict if hasattr(errors, "error_dict") else {NON_FIELD_ERRORS: errors.error_list}
        for key, messages in by_key.items():
            field, _, detail = key.partition(".")
            if field not in self.fields:
                field, detail = NON_FIELD_ERRORS, key
            for message in ValidationError(messages).messages:
                remapped.setdefault(field, []).append(f"{detail}: {message}" if detail else message)
        super()._update_errors(ValidationError(remapped))

