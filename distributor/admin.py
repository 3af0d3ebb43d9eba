"""The admin: every model with the columns, filters and searches an operator
needs; results (raw events, task-jobs, tasks, attempts) are read-only.

Tables grow to millions of rows, so change lists never count the whole
table (``show_full_result_count``) and foreign keys are raw ids.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from distributor import reconciler
from distributor.audit import UPLOAD_ACTIONS, form_changes, record, record_upload, user_actor
from distributor.campaigns.models import Campaign, CampaignLevel, CampaignSet
from distributor.forms import TargetForm
from distributor.labels import label_stored
from distributor.queue import resubmit_job
from distributor.models import (
    Attempt, AuditEntry, Binary, BootImage, Calibration, DistributorConfig, EtmModel, EtmVersion, Event, Host, Job, JobContent,
    Machine, Notification, Slot, Target, Task, TaskJob, TaskSet,
)
from distributor.models.targets import Upload


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


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent, never added, changed or removed here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "state", "target", "owner", "done", "variant_count", "priority", "created_at")
    list_filter = ("state", "target", "owner")
    search_fields = ("=id", "name", "source_name")
    list_select_related = ("target", "owner")
    # What was submitted and where it stands change only through the job's
    # actions (cancel, resubmit, its priority through Job.set_priority), never
    # by editing the row: only the name is a plain field.
    readonly_fields = ("state", "spec", "variant_count", "offset", "finished_count", "bad_count", "cursor",
                       "owner", "target", "source_name", "tries", "admission", "monitors", "cancel_now", "notify_bad",
                       "bad_notified", "bad_notified_at", "results_generation",
                       "created_at", "started_at", "ended_at", "contents")
    actions = ("cancel", "resubmit")
    show_full_result_count = False

    @admin.display(description="binaries and boot images it runs")
    def contents(self, job: Job) -> str:
        return "; ".join(f"{c.kind} {c.name} = sha256 {c.sha256}" for c in JobContent.objects.filter(job=job)) or "—"

    @admin.display(description="done")
    def done(self, job: Job) -> str:
        return f"{job.finished_count + job.bad_count} / {job.total} ({job.bad_count} bad)"

    def save_model(self, request: HttpRequest, job: Job, form, change: bool) -> None:
        """The name is saved as is; a new priority goes through the job's own
        method (refused once the job has ended) and into the audit trail."""
        if not change:  # has_add_permission refuses; jobs come from queue.submit_job
            raise ValidationError("jobs are submitted, not added here")
        if "name" in form.changed_data:
            job.save(update_fields=["name"])
        if "priority" in form.changed_data:
            before = Job.objects.values_list("priority", flat=True).get(pk=job.pk)
            if job.set_priority(form.cleaned_data["priority"]):
                record(user_actor(request.user), "job-priority", f"job {job.pk}", {"priority": [before, job.priority]})
            else:
                self.message_user(request, f"Job {job.pk} has ended: its priority no longer matters.", messages.WARNING)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a job is submitted (web, API, manage.py submit), its file checked

    @admin.action(description="Cancel: hand out no more task-sets (running ones finish)")
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        cancelled = [job.pk for job in queryset if job.cancel()]
        for pk in cancelled:
            record(user_actor(request.user), "job-cancel", f"job {pk}", {"now": False})
        self.message_user(request, f"Cancelled {len(cancelled)} job(s).", messages.SUCCESS)

    @admin.action(description="Resubmit: queue a copy with the same file and options")
    def resubmit(self, request: HttpRequest, queryset: QuerySet) -> None:
        new, refused = [], []
        for job in queryset:
            try:
                new.append(resubmit_job(job, owner=request.user).pk)
                record(user_actor(request.user), "job-resubmit", f"job {job.pk}", {"new_job": new[-1]})
            except ValidationError as error:
                refused.append(f"#{job.pk}: {'; '.join(error.messages)}")
        if new:
            self.message_user(request, f"Queued job(s) {', '.join(map(str, new))}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not resubmitted: {', '.join(refused)}", messages.ERROR)


class TaskInline(ReadOnlyInline):
    model = Task
    fields = readonly_fields = ("task_id", *Task.FIELDS)


class AttemptInline(ReadOnlyInline):
    model = Attempt
    fields = readonly_fields = ("number", "machine", "started_at", "ended_at", "result", "error")


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
        requeued = [taskset.pk for taskset in queryset if taskset.requeue_bad()]
        count = len(requeued)
        if requeued:
            record(user_actor(request.user), "taskset-requeue", "task-sets " + ", ".join(map(str, requeued)))
        reconciler.wake()
        self.message_user(request, f"Requeued {count} task-set(s); only bad ones of unfinished or finished jobs qualify.")

    @admin.action(description="Mark queued task-sets bad")
    def mark_queued_bad(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"marked bad by {request.user.get_username()}"
        given_up = [ts.pk for ts in queryset.select_related("job") if ts.give_up(reason, labeller=label_stored)]
        count = len(given_up)
        if given_up:
            record(user_actor(request.user), "taskset-bad", "task-sets " + ", ".join(map(str, given_up)))
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
        count = self._order(request, queryset, Machine.StopMode.DRAIN, "drain")
        self.message_user(request, f"Draining {count} live machine(s).", messages.SUCCESS)

    @admin.action(description="Kill: stop now, the running task-set goes back to the queue untouched")
    def kill(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = self._order(request, queryset, Machine.StopMode.KILL, "kill")
        self.message_user(request, f"Killing {count} live machine(s).", messages.SUCCESS)

    @staticmethod
    def _order(request: HttpRequest, queryset: QuerySet, mode: str, action: str) -> int:
        ids = sorted(queryset.values_list("pk", flat=True))
        count = Machine.order(queryset, mode)
        record(user_actor(request.user), action, "machines " + ", ".join(map(str, ids)), {"machines": count})
        return count

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

    def save_model(self, request: HttpRequest, target: Target, form, change: bool) -> None:
        changes = form_changes(form)
        super().save_model(request, target, form, change)
        record(user_actor(request.user), "target-edit" if change else "target-add", target.name, changes)

    def delete_model(self, request: HttpRequest, target: Target) -> None:
        name = target.name
        super().delete_model(request, target)
        record(user_actor(request.user), "target-remove", name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for target in queryset:
            self.delete_model(request, target)


class UploadAdminForm(forms.ModelForm):
    """The web upload's checks (distributor.models.targets.Upload): the
    kind's size limit, a name by its rule (default: the file's name). The
    file itself is stored by the model's ``store`` in ``save_model``."""

    name = forms.CharField(required=False, max_length=100, help_text="default: the file's name")
    # Not a model field: the content goes to the database through Upload.store.
    file = forms.FileField(required=False, help_text="a new upload, or a replacement of this one's content")

    class Meta:
        fields = ("name",)

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if upload is None or not self.has_changed() or "file" not in self.changed_data:
            return upload
        self._meta.model.check_size(upload.size)
        return upload

    def clean(self):
        data = super().clean()
        model: type[Upload] = self._meta.model
        if not self.instance.pk and data.get("file") is None and not self.has_error("file"):
            self.add_error("file", "This field is required.")
        if self.instance.pk:  # a file is replaced under its name; a new name is a new upload
            data["name"] = self.instance.name
        elif data.get("file") is not None:
            data["name"] = model.name_for(data.get("name") or "", data["file"].name)
        if data.get("name"):
            try:
                model.check_name(data["name"])
            except ValidationError as error:
                self.add_error("name" if not self.instance.pk else None, error.message_dict["name"])
        self.instance.name = data.get("name") or ""
        return data


@admin.register(Binary)
class BinaryAdmin(admin.ModelAdmin):
    """Added and replaced through ``Upload.store``: the size and SHA-256
    computed from the bytes, the name checked as in the web form; each
    upload recorded in the audit trail."""

    form = UploadAdminForm
    list_display = ("name", "size", "sha256", "uploaded_at", "uploaded_by")
    search_fields = ("name", "sha256")
    readonly_fields = ("sha256", "size", "uploaded_at", "uploaded_by")

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> tuple[str, ...]:
        return (("name",) if obj else ()) + self.readonly_fields

    def delete_model(self, request: HttpRequest, obj: Upload) -> None:
        name, action = obj.name, UPLOAD_ACTIONS[obj._meta.model_name].replace("-upload", "-remove")
        super().delete_model(request, obj)
        record(user_actor(request.user), action, name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    def save_model(self, request: HttpRequest, obj: Upload, form, change: bool) -> None:
        if "file" not in form.changed_data:
            return  # nothing but the name could differ, and it is read-only once stored
        item, replaced = type(obj).store(form.cleaned_data["name"], form.cleaned_data["file"], request.user)
        record_upload(user_actor(request.user), item, replaced)
        obj.pk, obj.sha256, obj.size = item.pk, item.sha256, item.size
        obj.uploaded_at, obj.uploaded_by = item.uploaded_at, item.uploaded_by


@admin.register(BootImage)
class BootImageAdmin(BinaryAdmin):
    pass


class DistributorConfigForm(forms.ModelForm):
    class Meta:
        model = DistributorConfig
        fields = "__all__"

    def clean_max_machines(self) -> int:
        try:
            return self.instance.check_max(self.cleaned_data["max_machines"])
        except ValidationError as error:
            raise ValidationError(error.message_dict["max_machines"]) from None


@admin.register(DistributorConfig)
class DistributorConfigAdmin(admin.ModelAdmin):
    list_display = ("__str__", "max_machines", "halted", "default_tries", "heartbeat_timeout_s", "target_timeout_s",
                    "idle_timeout_s", "updated_at")
    # Halted is set by kill/shut down and lifted by resume (the dashboard, the
    # API, manage.py distributor); the machine count goes through the
    # reconciler as from the dashboard; both are recorded in the audit trail.
    readonly_fields = ("halted", "updated_at")
    form = DistributorConfigForm

    def save_model(self, request: HttpRequest, config: DistributorConfig, form, change: bool) -> None:
        actor, changes = user_actor(request.user), form_changes(form)
        if not change:
            super().save_model(request, config, form, change)
            record(actor, "settings", "distributor settings", changes)
            return
        wanted = changes.pop("max_machines", None)
        if changes:
            config.save(update_fields=[*changes, "updated_at"])
            record(actor, "settings", "distributor settings", changes)
        if wanted is not None:
            reconciler.set_max_machines_for(actor, wanted[1])

    def has_add_permission(self, request) -> bool:
        return not DistributorConfig.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Slot)
class SlotAdmin(ReadOnlyAdmin):
    """A pool slot's health changes through its own transitions: the machine
    records failures and health checks; operators put slots into maintenance
    and back with the two actions (as from the dashboard, the API and
    ``manage.py distributor slot``), recorded in the audit trail."""

    list_display = ("target", "index", "health", "cause", "failures_in_a_row", "next_check_at", "changed_at")
    list_filter = ("health", "target")
    list_select_related = ("target",)
    actions = ("maintenance", "healthy")

    @admin.action(description="Maintenance: take out of service (its machine drains)")
    def maintenance(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set(request, queryset, Slot.Health.MAINTENANCE)

    @admin.action(description="Healthy: back in service")
    def healthy(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set(request, queryset, Slot.Health.HEALTHY)

    def _set(self, request: HttpRequest, queryset: QuerySet, health: str) -> None:
        slots = list(queryset.select_related("target"))
        for slot in slots:
            reconciler.set_slot_health(slot.target, slot.index, health, f"set by {request.user.get_username()}",
                                       actor=user_actor(request.user))
        self.message_user(request, f"{len(slots)} slot(s) now {health}.", messages.SUCCESS)


# -- hosts, campaigns, notifications and the audit trail ----------------------------------


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    """Written by each host's heartbeat (distributor/hosts.py) alone."""

    list_display = ("name", "capacity", "heartbeat_at", "started_at", "pid")
    search_fields = ("name",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    """What a campaign generates and where it stands change through its
    services (manage.py campaign, the campaign pages, the API): only its
    name is a plain field here."""

    list_display = ("id", "name", "kind", "state", "level", "owner", "created_at", "ended_at")
    list_filter = ("kind", "state")
    search_fields = ("=id", "name")
    readonly_fields = tuple(
        field.name for field in Campaign._meta.concrete_fields if field.name not in ("id", "name"))
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CampaignLevel)
class CampaignLevelAdmin(ReadOnlyAdmin):
    list_display = ("id", "campaign", "number", "sets", "candidates", "job", "created_at")
    search_fields = ("=campaign__id",)
    raw_id_fields = ("campaign", "job")


@admin.register(CampaignSet)
class CampaignSetAdmin(ReadOnlyAdmin):
    list_display = ("id", "campaign", "level", "variant", "digest")
    search_fields = ("=campaign__id", "digest")
    raw_id_fields = ("campaign",)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "job", "url", "state", "attempts", "due_at", "sent_at", "last_status")
    list_filter = ("state",)
    search_fields = ("=job__id", "url")
    raw_id_fields = ("job",)
    # Read-only, but the change form still builds the field: say the scheme
    # a bare address gets, as Django 6 will (no deprecation warning meanwhile).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


# -- execution-time models: versions are immutable, made by the etm commands,
# pages and API (typed in or calibrated); here they are looked at only.


class EtmVersionInline(ReadOnlyInline):
    model = EtmVersion
    fields = readonly_fields = ("version", "source", "calibrated", "target", "created_at", "note")


@admin.register(EtmModel)
class EtmModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    inlines = (EtmVersionInline,)


@admin.register(EtmVersion)
class EtmVersionAdmin(ReadOnlyAdmin):
    list_display = ("model", "version", "source", "calibrated", "target", "created_at")
    list_filter = ("source", "calibrated")
    search_fields = ("model__name", "target")
    list_select_related = ("model",)


@admin.register(Calibration)
class CalibrationAdmin(ReadOnlyAdmin):
    list_display = ("job", "model_name", "fitted", "ended_at", "error")
    search_fields = ("=job__id", "model_name")
    raw_id_fields = ("job", "fitted")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail: read, never written or deleted here."""

    list_display = ("at", "actor", "action", "subject", "changes")
    list_filter = ("action",)
    search_fields = ("actor", "action", "subject")
    date_hierarchy = "at"
