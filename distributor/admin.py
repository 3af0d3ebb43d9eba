"""The admin: every model with the columns, filters and searches an operator
needs; results (raw events, task-jobs, tasks, attempts) are read-only.

Tables grow to millions of rows, so change lists never count the whole
table (``show_full_result_count``) and foreign keys are raw ids.
"""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from distributor import reconciler
from distributor.forms import TargetForm
from distributor.labels import label_stored
from distributor.queue import resubmit_job
from distributor.models import (
    Attempt, Binary, BootImage, DistributorConfig, Event, Job, Machine, Target, Task, TaskJob, TaskSet,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Measured results and their evidence: looked at, never edited here."""

    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# -- jobs and task-sets ------------------------------------------------------------


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "state", "target", "owner", "done", "variant_count", "priority", "created_at")
    list_filter = ("state", "target", "owner")
    search_fields = ("=id", "name", "source_name")
    list_select_related = ("target", "owner")
    raw_id_fields = ("owner",)
    # What was submitted and where it stands change only through the job's
    # actions (cancel, resubmit), never by editing the row.
    readonly_fields = ("state", "spec", "variant_count", "offset", "finished_count", "bad_count", "cursor",
                       "created_at", "started_at", "ended_at")
    actions = ("cancel", "resubmit")
    show_full_result_count = False

    @admin.display(description="done")
    def done(self, job: Job) -> str:
        return f"{job.finished_count + job.bad_count} / {job.total} ({job.bad_count} bad)"

    @admin.action(description="Cancel: hand out no more task-sets (running ones finish)")
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = sum(job.cancel() for job in queryset)
        self.message_user(request, f"Cancelled {count} job(s).", messages.SUCCESS)

    @admin.action(description="Resubmit: queue a copy with the same file and options")
    def resubmit(self, request: HttpRequest, queryset: QuerySet) -> None:
        new, refused = [], []
        for job in queryset:
            try:
                new.append(resubmit_job(job, owner=request.user).pk)
            except ValidationError as error:
                refused.append(f"#{job.pk}: {'; '.join(error.messages)}")
        if new:
            self.message_user(request, f"Queued job(s) {', '.join(map(str, new))}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not resubmitted: {', '.join(refused)}", messages.ERROR)


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    can_delete = False
    fields = ("task_id", *Task.FIELDS)
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ("number", "machine", "started_at", "ended_at", "result", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TaskSet)
class TaskSetAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "variant", "state", "outcome", "attempts", "losses", "machine", "ended_at", "error")
    list_filter = ("state", "outcome", "job__target")
    search_fields = ("=id", "=job__id", "last_error")
    list_select_related = ("job", "machine")
    raw_id_fields = ("job", "machine")
    readonly_fields = ("job", "variant", "state", "outcome", "attempts", "losses", "machine", "created_at",
                       "started_at", "ended_at", "analysis", "last_error", "page")
    fields = readonly_fields
    inlines = (TaskInline, AttemptInline)
    actions = ("requeue_bad", "mark_queued_bad")
    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="last error")
    def error(self, taskset: TaskSet) -> str:
        return taskset.last_error[:120]

    @admin.display(description="page")
    def page(self, taskset: TaskSet) -> str:
        return format_html('<a href="/tasksets/{}/">task-set page with its Gantt chart</a>', taskset.pk)

    @admin.action(description="Requeue bad task-sets (one more try)")
    def requeue_bad(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = sum(taskset.requeue_bad() for taskset in queryset)
        reconciler.wake()
        self.message_user(request, f"Requeued {count} task-set(s); only bad ones of unfinished or finished jobs qualify.")

    @admin.action(description="Mark queued task-sets bad")
    def mark_queued_bad(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"marked bad by {request.user.get_username()}"
        count = sum(taskset.give_up(reason, labeller=label_stored) for taskset in queryset.select_related("job"))
        self.message_user(request, f"Marked {count} task-set(s) bad; only queued ones qualify.")


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "taskset", "task_id", "pkg", "arg1", "priority", "period", "deadline", "numberofjobs")
    list_filter = ("pkg",)
    search_fields = ("=taskset__id", "pkg")
    raw_id_fields = ("taskset",)


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "taskset", "number", "machine", "result", "started_at", "ended_at", "short_error")
    list_filter = ("result",)
    search_fields = ("=taskset__id", "error")
    raw_id_fields = ("taskset", "machine")

    @admin.display(description="error")
    def short_error(self, attempt: Attempt) -> str:
        return attempt.error[:120]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "taskset", "attempt", "seq", "task_id", "type", "time_ms", "received_at")
    list_filter = ("type",)
    search_fields = ("=taskset__id",)
    raw_id_fields = ("taskset",)


@admin.register(TaskJob)
class TaskJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "taskset", "task", "job_number", "release_ms", "start_ms", "end_ms", "exit_type")
    list_filter = ("exit_type",)
    search_fields = ("=taskset__id",)
    raw_id_fields = ("taskset", "task")
    list_select_related = ("task",)


# -- machines and targets --------------------------------------------------------------


@admin.register(Machine)
class MachineAdmin(admin.ModelAdmin):
    list_display = ("id", "target", "slot", "host", "address", "state", "stop_mode", "activity", "tasksets_done",
                    "heartbeat_at", "short_error")
    list_filter = ("state", "target", "host", "stop_mode")
    search_fields = ("=id", "address", "last_error", "activity")
    list_select_related = ("target",)
    raw_id_fields = ("current",)
    # A machine's row changes only through its transitions: read-only here,
    # with the operator's two orders as actions.
    readonly_fields = ("target", "slot", "host", "address", "state", "stop_mode", "reboot_requested", "lease", "pid",
                       "heartbeat_at", "launched_at", "started_at", "stopped_at", "current", "current_since",
                       "activity", "tasksets_done", "target_boots", "last_error")
    actions = ("drain", "kill")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the reconciler launches machines

    @admin.action(description="Drain: finish the current task-set, then stop")
    def drain(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = Machine.order(queryset, Machine.StopMode.DRAIN)
        self.message_user(request, f"Draining {count} live machine(s).", messages.SUCCESS)

    @admin.action(description="Kill: stop now, the running task-set goes back to the queue untouched")
    def kill(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = Machine.order(queryset, Machine.StopMode.KILL)
        self.message_user(request, f"Killing {count} live machine(s).", messages.SUCCESS)

    @admin.display(description="last error")
    def short_error(self, machine: Machine) -> str:
        return machine.last_error[:120]


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    # The session kind's check names errors "settings.<key>": this form shows
    # them on the settings field instead of failing on an unknown field name.
    form = TargetForm
    list_display = ("name", "kind", "host", "is_default", "settings", "addresses")
    list_filter = ("kind", "is_default")
    search_fields = ("name",)


@admin.register(Binary)
class BinaryAdmin(admin.ModelAdmin):
    list_display = ("name", "size", "sha256", "uploaded_at", "uploaded_by")
    search_fields = ("name", "sha256")
    readonly_fields = ("sha256", "size", "uploaded_at", "uploaded_by")


@admin.register(BootImage)
class BootImageAdmin(BinaryAdmin):
    pass


@admin.register(DistributorConfig)
class DistributorConfigAdmin(admin.ModelAdmin):
    list_display = ("__str__", "max_machines", "halted", "default_tries", "heartbeat_timeout_s", "target_timeout_s",
                    "idle_timeout_s", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not DistributorConfig.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
