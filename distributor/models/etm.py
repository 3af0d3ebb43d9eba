"""Execution-time models as data: a named model with immutable versions.

A version holds a ``sessions.etm`` document (per package a line and/or
measured points) and where it came from: typed in (imported, the seed
defaults) or calibrated on a target from the jobs it ran. A fit never edits a
version: it adds the next one. A target's ``etm`` setting names a model; its
newest version is the one used (``resolve``).
"""
from __future__ import annotations

import json
import re

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from sessions import etm as etm_module

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_MODEL = "genode-defaults"
ALIASES = {"default": DEFAULT_MODEL}  # what targets said before models were stored


class EtmModel(models.Model):
    """A named execution-time model; its figures are in its versions."""

    name = models.CharField(max_length=63, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "execution-time model"

    def __str__(self) -> str:
        return self.name

    @property
    def latest(self) -> EtmVersion | None:
        return self.versions.order_by("-version").first()

    @classmethod
    def add_version(cls, name: str, document: dict, *, calibrated: bool = False, target: str = "",
                    jobs: list[int] | tuple = (), note: str | None = None) -> EtmVersion:
        """Store ``document`` as the next version of model ``name`` (made if
        new). The document's own name and version are replaced by the
        stored ones. Raises ValidationError naming the field."""
        try:
            cls.check_name(name)
        except ValueError as error:
            raise ValidationError({"name": str(error)}) from None
        with transaction.atomic():
            model, _ = cls.objects.get_or_create(name=name)
            model = cls.objects.select_for_update().get(pk=model.pk)  # one next version at a time
            number = (model.latest.version if model.latest else 0) + 1
            stored = {**document, "name": name, "version": number}
            if note is not None:
                stored["note"] = note
            try:
                etm_module.ExecutionTimeModel.from_dict(stored)
            except etm_module.EtmError as error:
                raise ValidationError({"document": str(error)}) from None
            return EtmVersion.objects.create(
                model=model, version=number, note=stored.get("note", ""), calibrated=calibrated,
                source=EtmVersion.Source.CALIBRATED if calibrated else EtmVersion.Source.TYPED_IN,
                target=target, jobs=list(jobs), document=stored)

    @staticmethod
    def check_name(name: str) -> None:
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise ValueError(f"{str(name)[:80]!r}: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if name in ALIASES:
            raise ValueError(f"{name!r} is another name of {ALIASES[name]}; use that")

    @classmethod
    def named(cls, name: str) -> EtmModel | None:
        name = ALIASES.get(name, name)
        model = cls.objects.filter(name=name).first()
        if model is None and name == DEFAULT_MODEL:
            model = cls.load_defaults()
        return model

    @classmethod
    def load_defaults(cls) -> EtmModel:
        """genode-defaults from fixtures/etm.json, typed in: made by the
        migration, and again on first use in a database emptied since."""
        document = json.loads(etm_module.DEFAULT_PATH.read_text(encoding="utf-8"))
        with transaction.atomic():
            model, _ = cls.objects.get_or_create(name=DEFAULT_MODEL)
            if not model.versions.exists():
                EtmVersion.objects.get_or_create(model=model, version=document["version"], defaults={
                    "note": document.get("note", ""), "document": document})
        return model


class EtmVersion(models.Model):
    """One immutable version: its document and its provenance."""

    class Source(models.TextChoices):
        TYPED_IN = "typed in"
        CALIBRATED = "calibrated"

    model = models.ForeignKey(EtmModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    calibrated = models.BooleanField(default=False, help_text="fitted from measurements on a target")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.TYPED_IN)
    target = models.CharField(max_length=63, blank=True, default="", help_text="the target it was calibrated on")
    jobs = models.JSONField(default=list, blank=True, help_text="the jobs whose measurements it was fitted from")
    document = models.JSONField(help_text="the model as sessions.etm reads it")

    class Meta:
        ordering = ["model", "version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="one_etm_version_number")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    def evaluator(self, target_name: str = "") -> etm_module.ExecutionTimeModel:
        """The model as the analysis and SimSo use it, ``calibrated`` only
        when it was calibrated on ``target_name``."""
        model = etm_module.ExecutionTimeModel.from_dict(self.document)
        model.calibrated = self.calibrated_on(target_name)
        return model

    def calibrated_on(self, target_name: str) -> bool:
        return self.calibrated and bool(target_name) and self.target == target_name

    def export(self) -> str:
        """The JSON file ``etm import`` reads back (provenance included as a note-free extra)."""
        return json.dumps(self.document, indent=2, sort_keys=True) + "\n"

    @property
    def provenance(self) -> dict:
        return {"source": self.source, "calibrated": self.calibrated, "target": self.target,
                "jobs": self.jobs, "created_at": self.created_at.isoformat()}


def resolve(name: str) -> EtmVersion:
    """The newest version of the stored model ``name`` ("default" is
    genode-defaults); raises EtmError naming the model."""
    if not isinstance(name, str) or not name:
        raise etm_module.EtmError("must name a stored execution-time model (manage.py etm list)")
    model = EtmModel.named(name) if "\x00" not in name else None  # no name holds one; PostgreSQL refuses the query
    version = model.latest if model else None
    if version is None:
        known = ", ".join(EtmModel.objects.values_list("name", flat=True)[:20]) or "none"
        raise etm_module.EtmError(f"no execution-time model named {name!r} (known: {known})")
    return version


class Calibration(models.Model):
    """A job submitted to measure execution times: when it ends, its
    measurements become the next version of ``model_name``."""

    job = models.OneToOneField("distributor.Job", on_delete=models.CASCADE, related_name="calibration")
    model_name = models.CharField(max_length=63)
    fitted = models.ForeignKey(EtmVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True, default="")
    ended_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"calibration of {self.model_name} by job {self.job_id}"

    @property
    def is_done(self) -> bool:
        return self.ended_at is not None

    def done(self, version: EtmVersion | None, error: str = "") -> bool:
        """Record the fit's result once: False when another process did already."""
        return bool(Calibration.objects.filter(pk=self.pk, ended_at__isnull=True).update(
            fitted=version, error=error[:4000], ended_at=timezone.now()))
