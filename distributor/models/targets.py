from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import ClassVar, Self

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import models, transaction
from django.db.models import Q

from distributor.environment import host_environment
from distributor.models.blobs import Blob
from distributor.models.etm import EtmModel
from distributor.taskfile import PKG_NAME, DepthError, Expander, TaskFileError, check_depth, parse
from sessions import SESSION_KINDS, get_session_class

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# A boot image's name: a binary's rule, longer (no "/", no leading dot, no "..").
IMAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")
# Settings of every pool, whatever its kind: how the distributor treats its
# slots (distributor/models/slots.py) and when it reboots its targets. They
# live in ``settings`` beside the kind's own so that every way a target is
# edited (page, admin, ``target add --set``) reaches them.
POOL_SETTINGS = {
    "quarantine_after": 3,  # target failures in a row that quarantine a slot
    "health_check_every": 60,  # seconds before a quarantined slot's first health check (or a faulty host's next try); doubles per failure
    "health_check": None,  # a task-set file (JSON) known to pass; None: the last task-set finished on the pool
    "reboot_every_taskset": False,  # reboot the target between every two task-sets
}


class Target(models.Model):
    """A named pool of one kind of target: its machines share a session kind
    and settings; a pool with addresses has one machine slot per address."""

    name = models.CharField(max_length=63, unique=True)
    kind = models.CharField(max_length=32)
    settings = models.JSONField(default=dict, blank=True)
    # "host:port" per machine slot, in slot order (empty for local kinds).
    addresses = models.JSONField(default=list, blank=True)
    # The distributor host whose machines cluster runs this pool ("" = any).
    host = models.CharField(max_length=63, blank=True, default="")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_target"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def capacity(self) -> int | None:
        """Machine slots in this pool; None when only the global cap limits it."""
        if self.addresses:
            return len(self.addresses)
        return get_session_class(self.kind).capacity(self, host_environment())

    def address_of(self, slot: int) -> str:
        return self.addresses[slot] if slot < len(self.addresses) else ""

    def clean(self) -> None:
        if not TARGET_NAME.fullmatch(self.name or ""):
            raise ValidationError({"name": "1-63 letters, digits, '.', '_' or '-'"})
        try:
            check_depth(self.settings)
        except DepthError as error:
            raise ValidationError({"settings": str(error)}) from None
        if self.kind not in SESSION_KINDS:
            raise ValidationError({"kind": f"unknown kind {self.kind!r}; known: {', '.join(sorted(SESSION_KINDS))}"})
        kind_settings = {k: v for k, v in (self.settings or {}).items() if k not in POOL_SETTINGS}
        errors = SESSION_KINDS[self.kind].check_settings(kind_settings, self.addresses or [])
        etm = (self.settings or {}).get("etm")
        if "settings.etm" not in errors and isinstance(etm, str) and EtmModel.named(etm) is None:
            known = ", ".join(EtmModel.objects.values_list("name", flat=True)[:20]) or "none"
            errors["settings.etm"] = f"no execution-time model named {etm!r} (known: {known})"
        errors.update(_pool_setting_errors(self.settings or {}))
        if errors:
            raise ValidationError(errors)

    def save(self, *args, **kwargs) -> None:
        """One default pool: a target saved as the default takes the mark from
        the others, in the same transaction (the web form, the admin and
        ``target add --default`` all come here)."""
        with transaction.atomic():
            if self.is_default:
                Target.objects.exclude(pk=self.pk).filter(is_default=True).update(is_default=False)
            super().save(*args, **kwargs)

    def validate_constraints(self, exclude=None) -> None:
        """The one-default constraint is no input error: ``save`` moves the mark."""
        super().validate_constraints(exclude={*(exclude or ()), "is_default"})

    def pool_setting(self, name: str):
        return (self.settings or {}).get(name, POOL_SETTINGS[name])

    @property
    def quarantine_after(self) -> int:
        return self.pool_setting("quarantine_after")

    @property
    def health_check_every(self) -> float:
        return self.pool_setting("health_check_every")

    @property
    def reboot_every_taskset(self) -> bool:
        return self.pool_setting("reboot_every_taskset")

    def health_check_tasks(self) -> list[dict] | None:
        """The tasks of the configured health check (its first variant), or
        None when none is configured."""
        spec = self.pool_setting("health_check")
        if not spec:
            return None
        return Expander(parse(json.dumps(spec), "health_check.json", max_bytes=HEALTH_CHECK_MAX_BYTES).spec).variant(0)

    @classmethod
    def default(cls) -> "Target":
        """The default pool; a SimSo pool is created on first use so that a
        fresh installation runs task-sets without any set-up."""
        target = cls.objects.filter(is_default=True).first()
        if target is None:
            target, _ = cls.objects.get_or_create(name="simso", defaults={"kind": "simso", "is_default": True})
        return target


HEALTH_CHECK_MAX_BYTES = 64 * 1024


def _pool_setting_errors(settings: dict) -> dict[str, str]:
    errors = {}
    after = settings.get("quarantine_after", 3)
    if isinstance(after, bool) or not isinstance(after, int) or not 1 <= after <= 1000:
        errors["settings.quarantine_after"] = "must be an integer from 1 to 1000"
    every = settings.get("health_check_every", 60)
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0.1 <= every <= 24 * 3600:
        errors["settings.health_check_every"] = "must be a number of seconds from 0.1 to 86400"
    if not isinstance(settings.get("reboot_every_taskset", False), bool):
        errors["settings.reboot_every_taskset"] = "must be true or false"
    check = settings.get("health_check")
    if check is not None:
        if not isinstance(check, dict):
            errors["settings.health_check"] = 'must be a task-set file as a JSON object ({"tasksets": [{"tasks": [...]}]}) or null'
        else:
            try:
                parse(json.dumps(check), "health_check.json", max_bytes=HEALTH_CHECK_MAX_BYTES)
            except TaskFileError as error:
                errors["settings.health_check"] = "; ".join(f"{path}: {message}" for path, message in error.errors)
    return errors


class Upload(models.Model):
    """A file uploaded for targets (a task binary, a boot image): a name for
    its content, which lives in the database (Blob, by ``sha256``) where every
    host reads it; no host's path is ever stored (issue 18). The SHA-256 and
    size let a user check what a target runs and a host verify its cached
    copy. Each kind may narrow ``name``; ``check_name`` holds its naming rule."""

    name = models.CharField(max_length=100, unique=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    uploaded_at = models.DateTimeField(auto_now=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    # The setting that bounds an upload's size through the web (BINARY_MAX_BYTES, IMAGE_MAX_BYTES).
    max_bytes_setting: ClassVar[str]
    name_help: ClassVar[str] = "default: the file's name"

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        self.check_name(self.name)

    @classmethod
    def name_for(cls, name: str, filename: str) -> str:
        """The name asked for, else the uploaded file's."""
        return name or filename

    @classmethod
    def check_name(cls, name: str) -> None:
        if not name or len(name) > cls._meta.get_field("name").max_length:
            raise ValidationError({"name": f"{name!r} must be 1-{cls._meta.get_field('name').max_length} characters"})

    @classmethod
    def check_size(cls, size: int) -> None:
        """A file's size against the kind's limit (the setting named by
        ``max_bytes_setting``); the message is the file field's. (An empty
        file never gets here: Django's FileField refuses it first.)"""
        limit = getattr(settings, cls.max_bytes_setting)
        if size > limit:
            raise ValidationError(f"is {size:,} bytes; the limit is {limit:,} bytes")

    @classmethod
    def store(cls, name: str, content: File, user=None) -> tuple[Self, bool]:
        """Store the content (once per checksum, streamed: flat memory) and
        point the row of ``name`` at it (a new row, or the old one replaced:
        True), all in one transaction. Content no upload names any more goes
        with it."""
        with transaction.atomic():
            blob = Blob.store(content)
            item = cls.objects.select_for_update().filter(name=name).first() or cls(name=name)
            replaced, old_sha256 = item.pk is not None, item.sha256
            item.sha256, item.size, item.uploaded_by = blob.sha256, blob.size, user
            item.save()
            if replaced and old_sha256 != blob.sha256:
                Blob.delete_unused({old_sha256}, used=contents_in_use({old_sha256}))
        return item, replaced

    def delete(self, *args, **kwargs):
        """The row, and its content when no other upload names it."""
        with transaction.atomic():
            result = super().delete(*args, **kwargs)
            Blob.delete_unused({self.sha256}, used=contents_in_use({self.sha256}))
        return result

    def blob(self) -> Blob | None:
        return Blob.objects.filter(pk=self.sha256).first()


def contents_in_use(sha256s: set[str]) -> set[str]:
    """The contents among ``sha256s`` that a binary, a boot image or a job
    names: a job keeps the content it runs (JobContent) after its upload is
    replaced or removed, until ``purge --contents`` lets it go."""
    return (set(Binary.objects.filter(sha256__in=sha256s).values_list("sha256", flat=True))
            | set(BootImage.objects.filter(sha256__in=sha256s).values_list("sha256", flat=True))
            | set(JobContent.objects.filter(sha256__in=sha256s).values_list("sha256", flat=True)))


class Binary(Upload):
    """A task binary sent to Genode targets (SEND_BINARIES)."""

    name = models.CharField(max_length=15, unique=True)

    max_bytes_setting = "BINARY_MAX_BYTES"
    name_help = "default: the file's name; at most 15 bytes"

    class Meta:
        verbose_name_plural = "binaries"

    @classmethod
    def check_name(cls, name: str) -> None:
        # Genode's loader keeps 15 bytes + NUL per binary name, and a task's
        # pkg names its binary: the task-set files' rule. A name that would be
        # cut (the seed code cut silently) or that could name a path is refused.
        if not PKG_NAME.fullmatch(name) or len(name.encode()) > 15 or ".." in name:
            raise ValidationError({"name": f"{name!r} must be 1-15 bytes of ASCII letters, digits, '_', '.' or '-', "
                                           "not starting with '.' nor holding '..' (Genode keeps 15 bytes of a "
                                           "binary's name)"})



class BootImage(Upload):
    """A kernel or image booted by QEMU pools (the seeds' image.elf)."""

    max_bytes_setting = "IMAGE_MAX_BYTES"
    name_help = "default: the file's name; 1-100 ASCII letters, digits, '_', '.', '+' or '-'"

    @classmethod
    def name_for(cls, name: str, filename: str) -> str:
        # A long file name is cut to the column rather than refused; a typed one is not.
        return name or filename[:100]

    @classmethod
    def check_name(cls, name: str) -> None:
        # A QEMU pool's kernel and initrd settings name an image: a name that
        # could be a path ("/etc/passwd", "../x") or a hidden file is refused.
        if not IMAGE_NAME.fullmatch(name or "") or ".." in name:
            raise ValidationError({"name": f"{name!r} must be 1-100 ASCII letters, digits, '_', '.', '+' or '-', "
                                           "not starting with '.' nor holding '..' (no path)"})


class JobContent(models.Model):
    """A binary or a boot image a job runs, named by its checksum.

    A job names the uploads it uses when it is submitted (its tasks' pkgs on a
    kind that sends binaries, the boot images its pool's settings name), or,
    for one uploaded only later, when a machine first needs it. From then on
    every task-set of the job runs that content, on every host, whatever is
    uploaded under the name meanwhile: a campaign never mixes two binaries
    under one name, and its results say exactly what ran. The content stays
    in the database while a job names it (``contents_in_use``); a replaced
    upload's content goes when ``purge --contents`` finds only jobs ended
    before its date naming it. The rows themselves stay: the job keeps saying
    what it ran."""

    class Kind(models.TextChoices):
        BINARY = "binary"
        IMAGE = "image", "boot image"

    job = models.ForeignKey("distributor.Job", on_delete=models.CASCADE, related_name="contents")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=100)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.PositiveBigIntegerField()
    named_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "kind", "name"], name="one_content_per_job_name")]
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return f"job {self.job_id} {self.kind} {self.name} = {self.sha256[:12]}…"

    @classmethod
    def name_for_job(cls, job, target: "Target", pkgs: Sequence[str]) -> None:
        """At submission: the uploads the job will use, as they are now."""
        kind = SESSION_KINDS.get(target.kind)
        if kind is None:  # not loaded by this process: its machines name what they use
            return
        if kind.sends_binaries:
            cls.resolve(job.pk, cls.Kind.BINARY, pkgs)
        images = [target.settings[key] for key in kind.boot_image_settings if target.settings.get(key)]
        cls.resolve(job.pk, cls.Kind.IMAGE, images)

    @classmethod
    def resolve(cls, job_id: int, kind: str, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(sha256, size) by name of the content job ``job_id`` runs under each
        of ``names``: the one it named before, else the current upload, named
        now (the first machine to name it wins: a conflicting insert is
        ignored and the stored row read back). A name neither named nor
        uploaded is absent."""
        named = cls._named(job_id, kind, names)
        unnamed = [name for name in names if name not in named]
        if not unnamed:
            return named
        with transaction.atomic():
            # The uploads' rows locked until the names are stored: an upload
            # replaced or removed meanwhile either commits first (its new
            # content is named) or waits and then keeps the content named here
            # (contents_in_use); never a name of content just deleted.
            rows = [cls(job_id=job_id, kind=kind, name=name, sha256=sha256, size=size)
                    for name, (sha256, size) in cls.current(kind, unnamed, lock=True).items()]
            if not rows:
                return named
            cls.objects.bulk_create(rows, ignore_conflicts=True)
        return cls._named(job_id, kind, names)

    @classmethod
    def _named(cls, job_id: int, kind: str, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        if not names:
            return {}
        rows = cls.objects.filter(job_id=job_id, kind=kind, name__in=names).values_list("name", "sha256", "size")
        return {name: (sha256, size) for name, sha256, size in rows}

    @classmethod
    def current(cls, kind: str, names: Sequence[str], lock: bool = False) -> dict[str, tuple[str, int]]:
        """(sha256, size) by name of the uploads among ``names`` as they are now
        (what a machine runs outside any job: a health check, a first boot);
        with ``lock`` their rows stay locked until the caller's transaction ends."""
        uploads = UPLOAD_KINDS[kind].objects.filter(name__in=names)
        rows = (uploads.select_for_update() if lock else uploads).values_list("name", "sha256", "size")
        return {name: (sha256, size) for name, sha256, size in rows}

    @classmethod
    def of_job(cls, job_id: int) -> list[dict]:
        """The job's contents (``as_dict``), each with what became of it since:
        ``upload`` is "current" while its upload still names it, "replaced"
        or "removed" after; ``stored`` is False once purged."""
        rows = list(cls.objects.filter(job_id=job_id))
        current = {(kind, name): sha256 for kind, model in UPLOAD_KINDS.items()
                   for name, sha256 in model.objects.filter(name__in=[r.name for r in rows if r.kind == kind])
                   .values_list("name", "sha256")}
        stored = set(Blob.objects.filter(pk__in={row.sha256 for row in rows}).values_list("sha256", flat=True))
        return [{**row.as_dict(), "stored": row.sha256 in stored,
                 "upload": {None: "removed", row.sha256: "current"}.get(current.get((row.kind, row.name)), "replaced")}
                for row in rows]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "size": self.size,
                "named_at": self.named_at.isoformat()}


UPLOAD_KINDS: dict[str, type[Upload]] = {JobContent.Kind.BINARY: Binary, JobContent.Kind.IMAGE: BootImage}
