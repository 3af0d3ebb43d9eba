from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Campaign(models.Model):
    """A generated workload. Its parameters and seed decide every task-set it
    will ever submit; ``level`` is the last level submitted (0 = none yet)."""

    class Kind(models.TextChoices):
        RANDOM = "random"  # one job of UUniFast task-sets
        GROW = "grow"  # levels of growing task-sets

    class State(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"
        STOPPED = "stopped"  # by the operator, or a level's job was cancelled

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    target = models.ForeignKey("distributor.Target", on_delete=models.PROTECT, related_name="campaigns")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    seed = models.BigIntegerField()
    params = models.JSONField(help_text="the generation parameters, as given")
    level = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # advance_all: the running campaigns, every tick
            models.Index(fields=["state"], condition=Q(state="running"), name="campaign_running"),
        ]

    def __str__(self) -> str:
        return f"campaign {self.pk} {self.name}"

    # -- state changes: compare-and-set, the only writes of ``state`` and ``level``

    def end(self, state: str, note: str = "") -> bool:
        """A running campaign finishes or is stopped (``note`` says why)."""
        return bool(Campaign.objects.filter(pk=self.pk, state=self.State.RUNNING).update(
            state=state, ended_at=timezone.now(), last_error=note))

    def resume(self) -> bool:
        """A stopped campaign runs again from where it stood."""
        return bool(Campaign.objects.filter(pk=self.pk, state=self.State.STOPPED).update(
            state=self.State.RUNNING, ended_at=None, last_error=""))

    def enter_level(self, number: int) -> bool:
        """Level ``number`` is being submitted; False if another caller did it first."""
        return bool(Campaign.objects.filter(pk=self.pk, state=self.State.RUNNING, level=number - 1).update(
            level=number, last_error=""))

    def note_error(self, error: BaseException) -> None:
        """A failed step stays on the row (and in the UI); the next tick retries."""
        Campaign.objects.filter(pk=self.pk).update(last_error=f"{type(error).__name__}: {error}"[:4000])


class CampaignLevel(models.Model):
    """One submitted level: the job that runs its task-sets of ``number`` tasks."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="levels")
    number = models.PositiveSmallIntegerField()
    job = models.ForeignKey("distributor.Job", null=True, on_delete=models.SET_NULL, related_name="+")
    sets = models.PositiveIntegerField()
    candidates = models.PositiveIntegerField(help_text="distinct sets that could have been run at this level")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["campaign", "number"]
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="one_job_per_campaign_level")]

    def __str__(self) -> str:
        return f"{self.campaign} level {self.number}"


class CampaignSet(models.Model):
    """A task-set of a growing campaign: variant ``variant`` of its level's job.

    ``members`` are the level-1 variants (single tasks) it is made of, so the
    next level can combine without reading task-sets back; ``digest`` makes
    sure the campaign never runs the same task-set twice.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="sets")
    level = models.PositiveSmallIntegerField()
    variant = models.PositiveIntegerField()
    members = models.JSONField()
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["campaign", "level", "variant"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "digest"], name="campaign_set_once"),
            # the next level reads a level's sets in variant order
            models.UniqueConstraint(fields=["campaign", "level", "variant"], name="campaign_set_variant"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign} level {self.level} set {self.variant}"
