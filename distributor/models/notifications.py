from __future__ import annotations

from datetime import timedelta

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


class Notification(models.Model):
    """One message a job sends when it ends: a POST of a JSON document to the
    URL its submitter gave (``notify``). Made with the job, waiting; due once
    the job has ended; sent by a background task (``distributor.notifications``),
    never by a machine, and tried again with a growing pause for an hour.
    Its delivery, or the last failure, is kept here and shown on the job page."""

    class Event(models.TextChoices):
        JOB_ENDED = "job.ended"  # one per address, made with the job, due when it ends
        TASKSET_BAD = "taskset.bad"  # made when task-sets turned bad (the job's notify_bad), due at once

    class State(models.TextChoices):
        WAITING = "waiting"  # the job has not ended
        PENDING = "pending"  # due: sent at next_try_at
        SENT = "sent"
        FAILED = "failed"  # still refused an hour after the job ended

    RETRY_FOR = timedelta(hours=1)
    BAD_NOTICE_PAUSE = timedelta(minutes=1)  # at most one taskset.bad message a job in this time
    FIRST_PAUSE = timedelta(seconds=15)  # then 30 s, 1 min, … at most MAX_PAUSE
    MAX_PAUSE = timedelta(minutes=15)
    LEASE = timedelta(minutes=2)  # a try in a worker that died is made again after this

    job = models.ForeignKey("distributor.Job", on_delete=models.CASCADE, related_name="notifications")
    url = models.URLField(max_length=2000)
    event = models.CharField(max_length=16, choices=Event.choices, default=Event.JOB_ENDED)
    # taskset.bad: task-sets of the job that turned bad since its last such message, and all of them.
    bad_new = models.BigIntegerField(null=True, blank=True)
    bad_total = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    attempts = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True, help_text="when the job's end was noticed")
    next_try_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="the last HTTP status")
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["job", "id"]
        indexes = [
            # the reconciler's step: waiting ones (to join with ended jobs) and pending ones by time
            models.Index(fields=["state", "next_try_at"], condition=Q(state__in=["waiting", "pending"]),
                         name="notification_open"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} → {self.url} ({self.state})"

    # -- state changes ---------------------------------------------------------

    @classmethod
    def make_due(cls) -> int:
        """Waiting notifications of jobs that have ended become due now."""
        from distributor.models import Job

        now = timezone.now()
        return cls.objects.filter(state=cls.State.WAITING, event=cls.Event.JOB_ENDED,
                                  job__state__in=[Job.State.FINISHED, Job.State.CANCELLED]
                                  ).update(state=cls.State.PENDING, due_at=now, next_try_at=now)

    @classmethod
    def rearm(cls, job) -> int:
        """A cancelled job continues (``Job.reopen_cancelled``): its end
        messages wait for its new end, as if never sent or tried. Returns how many."""
        return cls.objects.filter(job=job, event=cls.Event.JOB_ENDED).update(
            state=cls.State.WAITING, attempts=0, due_at=None, next_try_at=None, sent_at=None, last_error="")

    @classmethod
    def make_bad_due(cls) -> list[int]:
        """For each running job with ``notify_bad`` whose bad task-sets grew
        and whose last such message is BAD_NOTICE_PAUSE old: one message to
        each of its addresses, due now, counting the task-sets turned bad since
        the last. Returns the jobs told."""
        from distributor.models import Job

        now = timezone.now()
        jobs = Job.objects.filter(notify_bad=True, state__in=Job.ACTIVE_STATES).filter(
            Q(bad_notified_at__isnull=True) | Q(bad_notified_at__lte=now - cls.BAD_NOTICE_PAUSE))
        told = []
        for job in jobs.filter(bad_count__gt=models.F("bad_notified")):
            with transaction.atomic():  # the count told and the messages: both or neither
                if not job.note_bad(job.bad_notified, job.bad_count):
                    continue  # another reconciler told them
                addresses = cls.objects.filter(job=job, event=cls.Event.JOB_ENDED).values_list("url", flat=True)
                cls.objects.bulk_create([
                    cls(job=job, url=url, event=cls.Event.TASKSET_BAD, state=cls.State.PENDING, due_at=now,
                        next_try_at=now, bad_new=job.bad_count - job.bad_notified, bad_total=job.bad_count)
                    for url in addresses])
            told.append(job.pk)
        return told

    @classmethod
    def claim_due(cls, limit: int = 50) -> list[int]:
        """Due notifications, each taken for one try (compare-and-set on its
        time: two reconcilers never send one twice); a try that never reports
        back is due again after LEASE."""
        now = timezone.now()
        claimed = []
        for pk, at in cls.objects.filter(state=cls.State.PENDING, next_try_at__lte=now).order_by("next_try_at"
                                                                                              ).values_list("pk", "next_try_at")[:limit]:
            if cls.objects.filter(pk=pk, state=cls.State.PENDING, next_try_at=at).update(next_try_at=now + cls.LEASE):
                claimed.append(pk)
        return claimed

    def delivered(self, status: int | None) -> None:
        """Sent: the HTTP status, or None for an e-mail handed to the mail server."""
        now = timezone.now()
        Notification.objects.filter(pk=self.pk, state=self.State.PENDING).update(
            state=self.State.SENT, sent_at=now, attempts=models.F("attempts") + 1, last_status=status, last_error="")

    def refused(self, error: str, status: int | None = None) -> str:
        """A try failed: try again after a pause twice the last, or give up an
        hour after the job ended. Returns the new state."""
        attempts = self.attempts + 1
        now = timezone.now()
        pause = min(self.FIRST_PAUSE * 2 ** (attempts - 1), self.MAX_PAUSE)
        given_up = now + pause > (self.due_at or now) + self.RETRY_FOR
        state = self.State.FAILED if given_up else self.State.PENDING
        Notification.objects.filter(pk=self.pk, state=self.State.PENDING).update(
            state=state, attempts=attempts, last_status=status, last_error=error[:2000],
            next_try_at=None if given_up else now + pause)
        return state
