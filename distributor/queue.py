"""The queue: jobs go in, machines take task-sets out.

Submitting stores one Job row whatever the number of variants. Machines take
the job's queued task-sets, lowest variant first (so task-sets put back in the
queue run before fresh ones): each claim locks one task-set row and skips
those other machines hold (``FOR UPDATE SKIP LOCKED``; SQLite has one writer
anyway), so any number of machines on any number of hosts claim at once
without waiting for each other. When a job has no queued task-set left, a
machine turns its next BLOCK fresh variants into queued task-sets: the job's
``cursor`` moves under the job's row lock, once per block rather than once per
task-set, and the rows appear in the same transaction. A machine that finds
nothing left in a job ends it if none of its task-sets still runs: the job's
end follows the commit of its last result, whichever machine stored it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction

from distributor import egress, taskfile
from sessions import SESSION_KINDS
from distributor.models import (Binary, DistributorConfig, Job, JobContent, Machine, Notification, Orders, Target,
                                 TaskSet)

MAX_TRIES = 100
# A job's own wall-clock limit per task-set (time_limit): at most 30 days.
MAX_TIME_LIMIT_S = 30 * 86400
MAX_NOTIFY = 5
URL_LENGTH = Notification._meta.get_field("url").max_length
_URL = URLValidator(schemes=["http", "https"])
FILENAME_MAX = 255  # Job.source_name
NAME_MAX = 200  # Job.name
ADMISSION_INT_MAX = 2**63 - 1
# Called once a submission is stored: the reconciler registers ``wake`` here
# when the app is ready (it sits above the queue, which never imports it), so
# every way a job is made gets machines without its caller remembering to.
SUBMITTED_HOOKS: list[Callable[[], object]] = []


def submit_job(
    data: bytes | str,
    *,
    filename: str = "",
    target: Target | str | None = None,
    name: str = "",
    offset: int = 0,
    tries: int | None = None,
    priority: int = 0,
    admission: dict | None = None,
    monitors: list[str] | tuple = (),
    notify: list[str] | tuple = (),
    time_limit: int | None = None,
    notify_bad: bool = False,
    owner=None,
) -> Job:
    """Validate a task-set file and its options and queue it as one job.

    Raises ``taskfile.TaskFileError`` for the file and ``ValidationError``
    (keyed by option) for the rest; nothing is stored unless all is valid.
    Every hook in SUBMITTED_HOOKS is called (the reconciler's ``wake``).
    """
    parsed = taskfile.parse(data, filename)
    return _queue(parsed, filename=filename, target=target, name=name, offset=offset, tries=tries,
                  priority=priority, admission=admission, monitors=monitors, notify=notify, time_limit=time_limit,
                  notify_bad=notify_bad,
                  owner=owner)


def resubmit_job(job: Job, owner=None) -> Job:
    """A new job with the same task-sets and options, queued at the end:
    validated again like any submission (its target may be gone). It names
    the uploads as they are now, not the old job's contents."""
    parsed = taskfile.ParsedFile(spec=job.spec, variant_count=taskfile.variant_count(job.spec), format="json")
    return _queue(parsed, filename=job.source_name, target=job.target, name=job.name, offset=job.offset,
                  tries=job.tries, priority=job.priority, admission=job.admission, monitors=job.monitors,
                  notify=[n.url for n in job.notifications.all() if n.event == Notification.Event.JOB_ENDED],
                  notify_bad=job.notify_bad, time_limit=job.time_limit_s, owner=owner or job.owner)


def reopen_job(job: Job) -> bool:
    """A cancelled job runs again (``Job.reopen_cancelled``), and machines are
    found for it as for a submission (SUBMITTED_HOOKS)."""
    if not job.reopen_cancelled():
        return False
    for hook in SUBMITTED_HOOKS:
        hook()
    return True


def _queue(parsed: taskfile.ParsedFile, *, filename, target, name, offset, tries, priority, admission, monitors,
           notify, owner, time_limit=None, notify_bad=False) -> Job:
    options = check_options(parsed, target=target, offset=offset, tries=tries, priority=priority,
                            admission=admission, monitors=monitors, notify=notify, time_limit=time_limit,
                            notify_bad=notify_bad, name=name, filename=filename)
    notify = options.pop("notify")
    with transaction.atomic():
        job = Job.objects.create(
            name=(name or parsed.spec.get("name") or filename or "job")[:NAME_MAX],
            owner=owner,
            spec=parsed.spec,
            source_name=filename,
            variant_count=parsed.variant_count,
            cursor=options["offset"],
            **options,
        )
        Notification.objects.bulk_create([Notification(job=job, url=mail_address(url)) for url in notify])
        JobContent.name_for_job(job, options["target"], taskfile.pkg_names(parsed.spec))
    for hook in SUBMITTED_HOOKS:
        hook()
    return job


def check_options(parsed: taskfile.ParsedFile, *, target, offset, tries, priority, admission, monitors,
                  notify=(), time_limit=None, notify_bad=False, name="", filename="") -> dict:
    """The job options of a submission, validated; errors keyed by option.
    The one check of them: a submission's check and its queueing both call it."""
    from distributor.monitors import MONITORS

    errors: dict[str, str] = {}
    if not _storable(name):
        errors["name"] = "must be text without control characters or unpaired surrogates"
    elif len(name) > NAME_MAX:  # it would be cut silently
        errors["name"] = f"must be at most {NAME_MAX} characters"
    if filename_error(filename):
        errors["filename"] = filename_error(filename)
    resolved = _resolve_target(target, errors)
    if not _is_int(offset) or not 0 <= offset < parsed.variant_count:
        errors["offset"] = f"must be an integer from 0 to {parsed.variant_count - 1} (the file has {parsed.variant_count} variants)"
    if tries is None:
        tries = DistributorConfig.get().default_tries
    if not _is_int(tries) or not 1 <= tries <= MAX_TRIES:
        errors["tries"] = f"must be an integer from 1 to {MAX_TRIES}"
    if not _is_int(priority) or not -1000 <= priority <= 1000:
        errors["priority"] = "must be an integer from -1000 to 1000"
    if admission is not None and not _valid_admission(admission):
        errors["admission"] = ("must be an object of at most 64 names to finite numbers (integers within ±2^63) "
                               "or strings of at most 256 characters without control characters")
    unknown = [m for m in monitors if m not in MONITORS]
    if unknown:
        errors["monitors"] = f"unknown monitor(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(MONITORS))}"
    if notify_error(notify):
        errors["notify"] = notify_error(notify)
    if time_limit is not None and (not _is_int(time_limit) or not 1 <= time_limit <= MAX_TIME_LIMIT_S):
        errors["time_limit"] = (f"must be a whole number of seconds from 1 to {MAX_TIME_LIMIT_S} (30 days), "
                                "or empty for the task model's own")
    if not isinstance(notify_bad, bool):
        errors["notify_bad"] = "must be true or false"
    elif notify_bad and not notify:
        errors["notify_bad"] = "needs a notify URL (or e-mail address) to send the messages to"
    missing = missing_binaries(parsed.spec, resolved) if resolved is not None and parsed.spec else []
    if missing:
        errors["pkg"] = (f"no binary uploaded for {', '.join(map(repr, missing))}: a {resolved.kind} pool sends each "
                         "task's binary, so every task-set would end bad; upload it first "
                         "(python manage.py binary add FILE --name NAME)")
    if errors:
        raise ValidationError(errors)
    return {"target": resolved, "offset": offset, "tries": tries, "priority": priority,
            "admission": admission or None, "monitors": list(monitors), "notify": list(notify),
            "time_limit_s": time_limit, "notify_bad": notify_bad}


def missing_binaries(spec: dict, target: Target) -> list[str]:
    """The pkgs of the file no binary is uploaded for, on a kind that sends
    binaries (none on the others)."""
    kind = SESSION_KINDS.get(target.kind)
    if kind is None or not kind.sends_binaries:  # a kind this process does not load is checked by its machines
        return []
    names = taskfile.pkg_names(spec)
    return sorted(set(names) - set(Binary.objects.filter(name__in=names).values_list("name", flat=True)))


def notify_error(notify) -> str | None:
    """What is wrong with a job's ``notify``: at most MAX_NOTIFY http(s) URLs,
    or e-mail addresses where Django's mail is configured."""
    if not isinstance(notify, (list, tuple)) or not all(isinstance(url, str) for url in notify):
        return "must be a list of URLs"
    if len(notify) > MAX_NOTIFY:
        return f"at most {MAX_NOTIFY} URLs"
    for url in notify:
        if is_mail(url):
            if not mail_configured():
                return f"{url[:100]!r}: e-mail needs the site's mail settings (EMAIL_HOST …); give an http(s) URL"
            try:
                validate_email(url.removeprefix("mailto:"))
            except ValidationError:
                return f"{url[:100]!r} is not an e-mail address"
            continue
        try:
            if len(url) > URL_LENGTH or not _storable(url):
                raise ValidationError("too long")
            _URL(url)
        except ValidationError:
            return f"{url[:100]!r} is not an http:// or https:// URL of at most {URL_LENGTH} characters"
        internal = egress.internal_url(url)
        if internal:
            return f"{url[:100]!r}: {internal}"
    return None


def is_mail(address: str) -> bool:
    """An e-mail address, given as ``mailto:ana@example.org`` or plainly."""
    return address.startswith("mailto:") or ("@" in address and "://" not in address)


def mail_address(address: str) -> str:
    """How a notification stores an address: URLs as given, e-mail as mailto:."""
    return f"mailto:{address.removeprefix('mailto:')}" if is_mail(address) else address


def mail_configured() -> bool:
    """Django's mail is set up: another backend than SMTP, or an SMTP host named."""
    return (settings.EMAIL_BACKEND != "django.core.mail.backends.smtp.EmailBackend"
            or settings.EMAIL_HOST not in ("", "localhost"))


def _resolve_target(target, errors: dict) -> Target | None:
    if target is None or target == "":
        return Target.default()
    if isinstance(target, Target):
        return target
    if not _storable(target):  # PostgreSQL refuses a NUL even in a query
        errors["target"] = "must be a target's name, without control characters or unpaired surrogates"
        return None
    found = Target.objects.filter(name=target).first()
    if found is None:
        known = ", ".join(Target.objects.values_list("name", flat=True)) or "none"
        errors["target"] = f"no target named {target!r} (known: {known})"
    return found


def _valid_admission(admission) -> bool:
    """Numbers must be finite and strings storable: jsonb has no NaN, no NUL;
    an integer must fit the 64 bits a target or an export reads it into."""
    return isinstance(admission, dict) and len(admission) <= 64 and all(
        isinstance(key, str) and 0 < len(key) <= 64 and key.isidentifier()
        and (_is_int(value) and -ADMISSION_INT_MAX - 1 <= value <= ADMISSION_INT_MAX
             or isinstance(value, float) and math.isfinite(value)
             or isinstance(value, str) and len(value) <= 256 and _storable(value))
        for key, value in admission.items()
    )


def filename_error(filename) -> str | None:
    """What is wrong with a submission's file name (kept as the job's
    ``source_name``), or None: the same rule for the API, the form and the CLI."""
    if not isinstance(filename, str) or len(filename) > FILENAME_MAX:
        return f"must be a string of at most {FILENAME_MAX} characters"
    if not _storable(filename):
        return "must be text without control characters or unpaired surrogates"
    return None


def _storable(text) -> bool:
    """Text PostgreSQL can hold (no NUL, no lone surrogate) and a name needs (no control characters)."""
    return isinstance(text, str) and not taskfile.UNSTORABLE.search(text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- claims -------------------------------------------------------------------


@dataclass
class Claim:
    taskset: TaskSet
    tasks: list[dict]
    task_pks: dict[int, int]  # task id -> Task row, for the task-jobs of the result
    orders: Orders  # the operator's, read with the claim


def claim_next(machine: Machine) -> Claim | None:
    """The next task-set for this machine's target, or None when there is none.

    One read finds the active jobs in queue order and whether each has
    queued task-sets or variants left, so an idle machine polls without
    taking any lock. The claimed task-set carries its job (options, monitors,
    admission goal), so running it costs no further reads of the job."""
    for job_id, created_at, state, fresh_left, queued in Job.queue_of(machine.target_id):
        job = _job_of(job_id, created_at)
        job.state = state
        # Others may empty each new block before this machine claims from it:
        # it queues the next one rather than take a lower-priority job's
        # task-set. A job's variants are finite, so this ends.
        while True:
            claimed = TaskSet.claim(job, machine) if queued else None
            if claimed:
                return Claim(*claimed)
            queued = fresh_left and TaskSet.queue_block(job, _expander_of(job.pk, job.created_at).variant)
            if not queued:
                break
        job.end_if_done()  # it gave this machine nothing: it may have just had its last result
    return None


@lru_cache(maxsize=64)
def _job_of(job_id: int, created_at) -> Job:
    """A job's options never change once submitted, so each machine reads them
    once; its state comes with every look at the queue."""
    return Job.objects.defer("spec").get(pk=job_id)


@lru_cache(maxsize=64)
def _expander_of(job_id: int, created_at) -> taskfile.Expander:
    """A job's spec never changes, so its expander is kept per process; the
    creation time is in the key because an id can come back after a rollback."""
    return taskfile.Expander(Job.objects.values_list("spec", flat=True).get(pk=job_id))
