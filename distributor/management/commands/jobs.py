"""`jobs list|show|cancel|resubmit|priority`: a script's job commands.

    python manage.py jobs list [--state S] [--mine USER] [--json]
    python manage.py jobs show N [--json]
    python manage.py jobs cancel N [--now]      # --now also stops its running task-sets
    python manage.py jobs resubmit N            # prints the new job's id
    python manage.py jobs priority N P

``--json`` prints what ``Job.as_dict`` gives (the API's job without links):
``list`` one JSON array, ``show`` one object.
"""
from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor.audit import cli_actor, record
from distributor.models import Job
from distributor.queue import resubmit_job

DEFAULT_LIMIT = 50
MAX_LIMIT = 10**9


class Command(BaseCommand):
    help = "Jobs: list, show, cancel (--now stops running task-sets), resubmit, priority."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True,
                                        metavar="{list,show,cancel,resubmit,priority}")
        listing = actions.add_parser("list", help="jobs, newest first")
        listing.add_argument("--state", choices=Job.State.values, default=None, help="only jobs in this state")
        listing.add_argument("--mine", metavar="USER", default=None, help="only jobs this user submitted")
        listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many (default {DEFAULT_LIMIT})")
        listing.add_argument("--json", action="store_true", help="print a JSON array")
        show = actions.add_parser("show", help="one job: options, times, progress")
        show.add_argument("id", type=int)
        show.add_argument("--json", action="store_true", help="print a JSON object")
        cancel = actions.add_parser("cancel", help="hand out no more of its task-sets")
        cancel.add_argument("id", type=int)
        cancel.add_argument("--now", action="store_true",
                            help="also stop its running task-sets (they end cancelled, not bad)")
        resubmit = actions.add_parser("resubmit", help="queue a copy; prints the new job's id")
        resubmit.add_argument("id", type=int)
        priority = actions.add_parser("priority", help="move a job that has not ended in the queue")
        priority.add_argument("id", type=int)
        priority.add_argument("priority", type=int, help="-1000 to 1000; higher runs first")

    def handle(self, *args, action: str, **options) -> None:
        {"list": self._list, "show": self._show, "cancel": self._cancel, "resubmit": self._resubmit,
         "priority": self._priority}[action](options)

    def _list(self, options: dict) -> None:
        if not 1 <= options["limit"] <= MAX_LIMIT:  # beyond 2^63 the database refused the LIMIT with a traceback
            raise CommandError(f"--limit: must be from 1 to {MAX_LIMIT}")
        jobs = Job.objects.select_related("target", "owner").order_by("-pk")
        if options["state"]:
            jobs = jobs.filter(state=options["state"])
        if options["mine"] is not None:
            owner = get_user_model().objects.filter(username=options["mine"]).first()
            if owner is None:
                raise CommandError(f"--mine: no user {options['mine']!r}")
            jobs = jobs.filter(owner=owner)
        jobs = list(jobs[:options["limit"]])
        if options["json"]:
            self.stdout.write(json.dumps([job.as_dict() for job in jobs]))
            return
        if not jobs:
            self.stdout.write("no jobs")
            return
        rows = [("ID", "STATE", "PRIORITY", "DONE", "BAD", "TOTAL", "TARGET", "OWNER", "NAME")]
        for job in jobs:
            p = job.progress()
            rows.append((str(job.pk), job.state, str(job.priority), f"{p['percent']:g}%", str(p["bad"]),
                         str(p["total"]), job.target.name, job.owner.username if job.owner else "-", job.name))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def _show(self, options: dict) -> None:
        data = _job(options["id"]).as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        width = max(map(len, data))
        for key, value in data.items():
            if key == "progress":
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            self.stdout.write(f"{key.ljust(width)}  {'' if value is None else value}")

    def _cancel(self, options: dict) -> None:
        job = _job(options["id"])
        if job.cancel(now=options["now"]):
            record(cli_actor(), "job-cancel", f"job {job.pk}", {"now": options["now"]})
            what = "its running task-sets are being stopped" if options["now"] else "its running task-sets finish"
            self.stdout.write(f"job {job.pk} cancelled: {what}")
        else:
            self.stdout.write(f"job {job.pk} had already ended ({job.state})")

    def _resubmit(self, options: dict) -> None:
        try:
            new = resubmit_job(_job(options["id"]))
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        record(cli_actor(), "job-resubmit", f"job {options['id']}", {"new_job": new.pk})
        self.stdout.write(str(new.pk))

    def _priority(self, options: dict) -> None:
        job = _job(options["id"])
        before = job.priority
        try:
            changed = job.set_priority(options["priority"])
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        if not changed:
            raise CommandError(f"job {job.pk} has ended ({job.state}): its priority no longer matters")
        record(cli_actor(), "job-priority", f"job {job.pk}", {"priority": [before, job.priority]})
        self.stdout.write(f"job {job.pk} priority {job.priority}")


def _job(pk: int) -> Job:
    job = Job.objects.select_related("target", "owner").filter(pk=pk).first() if pk > 0 else None
    if job is None:
        raise CommandError(f"no job {pk} (python manage.py jobs list)")
    return job
