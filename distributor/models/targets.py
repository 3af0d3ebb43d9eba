from __future__ import annotations

import re
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from distributor.environment import host_environment
from distributor.models.rows import fetch, placeholders, table
from sessions import SESSION_KINDS, get_session_class

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Genode's loader keeps 15 bytes + NUL per binary name; a name that would be
# cut (the seed code cut silently) or that could name a path is refused.
BINARY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")


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
        if self.kind not in SESSION_KINDS:
            raise ValidationError({"kind": f"unknown kind {self.kind!r}; known: {', '.join(sorted(SESSION_KINDS))}"})
        errors = SESSION_KINDS[self.kind].check_settings(self.settings or {}, self.addresses or [])
        if errors:
            raise ValidationError(errors)

    @classmethod
    def default(cls) -> "Target":
        """The default pool; a SimSo pool is created on first use so that a
        fresh installation runs task-sets without any set-up."""
        target = cls.objects.filter(is_default=True).first()
        if target is None:
            target, _ = cls.objects.get_or_create(name="simso", defaults={"kind": "simso", "is_default": True})
        return target


class Binary(models.Model):
    """A task binary sent to Genode targets (SEND_BINARIES)."""

    name = models.CharField(max_length=15, unique=True)
    file = models.FileField(upload_to="binaries/")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    uploaded_at = models.DateTimeField(auto_now=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name_plural = "binaries"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def checksums(cls, names: Sequence[str]) -> dict[str, str]:
        """sha256 by name of the binaries among ``names`` (unknown ones absent)."""
        # A plain statement, not the ORM: a Genode machine asks before every
        # task-set, hundreds a second, and building the query cost more than it.
        return dict(fetch(f"SELECT name, sha256 FROM {table(cls)} WHERE name IN {placeholders(len(names))}", names))


class BootImage(models.Model):
    """A kernel or image booted by QEMU pools (the seeds' image.elf)."""

    name = models.CharField(max_length=100, unique=True)
    file = models.FileField(upload_to="images/")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    uploaded_at = models.DateTimeField(auto_now=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.name
