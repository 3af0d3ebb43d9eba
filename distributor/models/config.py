from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class DistributorConfig(models.Model):
    """The operator's knobs: one row (pk=1), read by every tick and machine."""

    max_machines = models.PositiveSmallIntegerField(default=1)
    # Set by "shut down all" and "kill all", lifted by "resume": while halted
    # the reconciler launches nothing.
    halted = models.BooleanField(default=False)
    default_tries = models.PositiveSmallIntegerField(default=3)
    # A machine whose heartbeat is older than this is declared dead.
    heartbeat_timeout_s = models.PositiveIntegerField(default=30)
    # A machine whose launch message was not picked up within this is dead.
    launch_timeout_s = models.PositiveIntegerField(default=120)
    # How long a target may stay silent during a task-set (the seeds used 40 s).
    target_timeout_s = models.PositiveIntegerField(default=40)
    # An idle machine waits this long for new work before it stops.
    idle_timeout_s = models.PositiveIntegerField(default=30)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "distributor settings"
        verbose_name_plural = "distributor settings"

    def __str__(self) -> str:
        return f"max {self.max_machines} of {self.cap}" + (" (halted)" if self.halted else "")

    @property
    def cap(self) -> int:
        return settings.DISTRIBUTOR_CAP

    @classmethod
    def get(cls) -> "DistributorConfig":
        config, _ = cls.objects.get_or_create(pk=1)
        return config

    def halt(self) -> None:
        """The operator's "shut down all" or "kill all": the reconciler launches nothing until ``resume``."""
        self._set_halted(True)

    def resume(self) -> None:
        """The operator lifts the halt: the reconciler launches machines again."""
        self._set_halted(False)

    def _set_halted(self, halted: bool) -> None:
        self.halted = halted
        self.save(update_fields=["halted", "updated_at"])

    def check_max(self, value: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError({"max_machines": "must be an integer"})
        if not 1 <= value <= self.cap:
            raise ValidationError({"max_machines": f"must be between 1 and {self.cap}, got {value}"})
        return value
