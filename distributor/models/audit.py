from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.db import models


class AuditEntry(models.Model):
    """One operator action: who (a user name, or ``cli:<login>`` from the
    command line), when, which action (a short name: ``max``, ``kill``,
    ``reboot``, ``target-add`` …), on what, and what changed. Append-only:
    rows are made by ``distributor.audit.record`` and never changed or deleted
    (``save`` of an existing row and ``delete`` refuse), so the trail cannot be
    rewritten from the admin or the shell by mistake."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)  # the page, the API and --since: newest first
    actor = models.CharField(max_length=160)
    action = models.CharField(max_length=40)
    subject = models.CharField(max_length=300, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.subject}".rstrip()

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise PermissionDenied("the audit trail is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionDenied("the audit trail is append-only")

    @property
    def changes_text(self) -> str:
        """The changes as one line of JSON, for pages and the command line."""
        return json.dumps(self.changes, sort_keys=True, ensure_ascii=False) if self.changes else ""

    def as_dict(self) -> dict:
        return {"id": self.pk, "at": self.at.isoformat(), "actor": self.actor, "action": self.action,
                "subject": self.subject, "changes": self.changes}
