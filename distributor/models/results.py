from __future__ import annotations

from django.db import models

from distributor.models.rows import EVENT_COLUMNS, insert_rows


class ExitType(models.TextChoices):
    """How a job ended, with the Genode task-loader's names (DESIGN §5)."""

    EXIT = "EXIT"  # normal end
    EXIT_CRITICAL = "EXIT_CRITICAL"  # killed at its critical time
    EXIT_PERIOD = "EXIT_PERIOD"  # still running at its period end: killed
    EXIT_EXTERNAL = "EXIT_EXTERNAL"  # stopped from outside
    EXIT_ERROR = "EXIT_ERROR"  # target fault: an infrastructure failure, never a result
    OUT_OF_QUOTA = "OUT_OF_QUOTA"
    OUT_OF_CAPS = "OUT_OF_CAPS"
    NOT_SCHEDULED = "NOT_SCHEDULED"  # never ran: start = end


class Event(models.Model):
    """An event exactly as the target reported it, stored as it arrives."""

    class Type(models.TextChoices):
        START = "START"
        EXIT = "EXIT"
        EXIT_CRITICAL = "EXIT_CRITICAL"
        EXIT_PERIOD = "EXIT_PERIOD"
        EXIT_EXTERNAL = "EXIT_EXTERNAL"
        EXIT_ERROR = "EXIT_ERROR"
        OUT_OF_QUOTA = "OUT_OF_QUOTA"
        OUT_OF_CAPS = "OUT_OF_CAPS"
        NOT_SCHEDULED = "NOT_SCHEDULED"
        JOBS_DONE = "JOBS_DONE"

    taskset = models.ForeignKey("distributor.TaskSet", on_delete=models.CASCADE, related_name="events",
                                db_index=False)  # see Meta
    attempt = models.PositiveSmallIntegerField()
    seq = models.PositiveIntegerField()
    task_id = models.PositiveIntegerField()
    type = models.CharField(max_length=16, choices=Type.choices)
    time_ms = models.BigIntegerField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["taskset", "attempt", "seq"]
        indexes = [
            # task-set page and discarding a failed attempt's events
            models.Index(fields=["taskset", "attempt", "seq"], name="event_by_attempt"),
        ]

    def __str__(self) -> str:
        return f"{self.type} task {self.task_id} @{self.time_ms}"

    @classmethod
    def purge_of_tasksets(cls, taskset_ids: list[int]) -> int:
        """``manage.py purge``: the raw events of these task-sets (of ended jobs:
        the caller's rule) in one statement; their task-jobs and outcomes stay.
        Nothing refers to an event, so this is a plain DELETE on the index."""
        deleted, _ = cls.objects.filter(taskset_id__in=taskset_ids).delete()
        return deleted

    @classmethod
    def store(cls, rows: list[tuple]) -> None:
        """A running task-set's events as they arrive (tuples in
        ``EVENT_COLUMNS`` order), between its claim and its finish, which
        stores the rest. Not the ORM: one prepared statement for the whole
        batch, no model instance per row (``rows.insert_rows``)."""
        insert_rows(cls, EVENT_COLUMNS, rows)


class TaskJob(models.Model):
    """One execution of a task, stored once, when its task-set finishes."""

    # Rows of a finished task-set arrive by the dozen for every task-set: no
    # index beyond those in Meta, which lead with these columns.
    taskset = models.ForeignKey("distributor.TaskSet", on_delete=models.CASCADE, related_name="taskjobs", db_index=False)
    task = models.ForeignKey("distributor.Task", on_delete=models.CASCADE, related_name="taskjobs", db_index=False)
    job_number = models.PositiveIntegerField(help_text="0 for the task's first job")
    release_ms = models.BigIntegerField(
        null=True, blank=True, help_text="offset + k·period; back to back: the end of the previous job")
    start_ms = models.BigIntegerField()
    end_ms = models.BigIntegerField()
    exit_type = models.CharField(max_length=16, choices=ExitType.choices)
    # The outcome model's judgement (sessions.outcomes): release + deadline
    # (or + period), none without either; met is null for a job that ran out
    # of quota or caps in time (not a timing result).
    deadline_abs_ms = models.BigIntegerField(null=True, blank=True)
    deadline_met = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["taskset", "task", "job_number"]
        constraints = [
            # the database itself refuses a second set of results
            models.UniqueConstraint(fields=["task", "job_number"], name="one_row_per_taskjob"),
        ]
        indexes = [
            # task-set page and exports: task-jobs of a task-set in order
            models.Index(fields=["taskset", "task", "job_number"], name="taskjob_by_taskset"),
        ]

    def __str__(self) -> str:
        return f"task {self.task.task_id} job {self.job_number}: {self.exit_type}"

    @property
    def response_ms(self) -> int | None:
        return None if self.release_ms is None else self.end_ms - self.release_ms
