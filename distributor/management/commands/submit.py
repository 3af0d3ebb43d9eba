"""python manage.py submit FILE [...] — queue a task-set file as a job."""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from distributor.management.options import read_input
from distributor.models import Job, Machine
from distributor.queue import submit_job
from distributor.reconciler import tick
from distributor.taskfile import TaskFileError, load_json


class Command(BaseCommand):
    help = "Queue a task-set file (JSON, YAML or Genode XML) as a job and print its id."

    def add_arguments(self, parser):
        parser.add_argument("file", help="task-set file; '-' reads standard input")
        parser.add_argument("--name", default="")
        parser.add_argument("--target", default="", help="target pool (default: the default target)")
        parser.add_argument("--offset", type=int, default=0, help="skip this many variants")
        parser.add_argument("--tries", type=int, default=None, help="attempts before a task-set is bad")
        parser.add_argument("--priority", type=int, default=0, help="higher runs first")
        parser.add_argument("--time-limit", type=int, default=None, metavar="SECONDS", dest="time_limit",
                            help="wall-clock seconds a task-set may run before its target counts as failed "
                                 "(default: from the task-set's own periods, jobs and offsets)")
        parser.add_argument("--admission", default=None, help="admission-control goal as a JSON object")
        parser.add_argument("--monitor", action="append", default=[], help="extra monitor, e.g. logging")
        parser.add_argument("--notify", action="append", default=[], metavar="URL",
                            help="POST a JSON document to this http(s) URL when the job ends (repeatable)")
        parser.add_argument("--notify-bad", action="store_true",
                            help="also tell the --notify addresses when task-sets turn bad (at most once a minute)")
        parser.add_argument("--wait", action="store_true", help="block until the job ends; print one JSON line")
        parser.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
        parser.add_argument("--inline", action="store_true",
                            help="with --wait: also run this job's machines in this process (no cluster needed)")

    def handle(self, *args, **opts):
        data, filename = self._read(opts["file"])
        admission = self._admission(opts["admission"])
        try:
            job = submit_job(data, filename=filename, target=opts["target"] or None, name=opts["name"],
                             offset=opts["offset"], tries=opts["tries"], priority=opts["priority"],
                             admission=admission, monitors=opts["monitor"], notify=opts["notify"],
                             time_limit=opts["time_limit"], notify_bad=opts["notify_bad"])
        except TaskFileError as error:
            raise CommandError(f"{filename}: invalid task-set file:\n{error}") from None
        except ValidationError as error:
            raise CommandError("; ".join(f"--{k.replace('_', '-')}: {' '.join(v)}"
                                         for k, v in error.message_dict.items())) from None
        if not opts["wait"]:
            self.stdout.write(str(job.pk))
            return
        if opts["inline"]:
            with inline_machines(job):
                result = wait_for(job, opts["timeout"])
        else:
            result = wait_for(job, opts["timeout"])
        self.stdout.write(json.dumps(result))

    def _read(self, name: str) -> tuple[bytes, str]:
        if name == "-":
            import sys

            return sys.stdin.buffer.read(), "stdin"
        return read_input(name), Path(name).name

    def _admission(self, raw: str | None) -> dict | None:
        if raw is None:
            return None
        try:
            return load_json(raw)
        except json.JSONDecodeError as error:
            raise CommandError(f"--admission: not JSON ({error.msg})") from None
        except ValueError as error:  # nested too deeply, or an integer of more than 4300 digits
            raise CommandError(f"--admission: {error}") from None


def wait_for(job: Job, timeout: float | None = None) -> dict:
    """Poll the job until it ends; the JSON line `submit --wait` prints."""
    started = time.monotonic()
    while True:
        job.refresh_from_db()
        if not job.is_active or (timeout is not None and time.monotonic() - started > timeout):
            break
        time.sleep(0.2)
    return {"job": job.pk, "state": job.state, **job.progress(), "seconds": round(time.monotonic() - started, 3)}


@contextmanager
def inline_machines(job: Job):
    """Run the machines the reconciler launches for this job in threads here,
    and stop them on leaving: none outlives the command (or, run in-process,
    the caller), and their rows end stopped rather than dead.

    The launch messages stay in the broker; if a cluster picks one up later
    it finds the machine taken and exits — the duplicate-delivery path."""
    from distributor.hosts import beat
    from distributor.machine import run_machine

    done, started, threads = threading.Event(), set(), []

    def loop():
        try:
            while not done.is_set() and Job.objects.filter(pk=job.pk, state__in=Job.ACTIVE_STATES).exists():
                beat()  # this process acts as the host's machines cluster
                tick()
                for pk in Machine.objects.filter(state=Machine.State.LAUNCHING, target=job.target).values_list("pk", flat=True):
                    if pk not in started:
                        started.add(pk)
                        threads.append(threading.Thread(target=run_machine, args=(pk,), daemon=True))
                        threads[-1].start()
                done.wait(0.2)
        finally:
            connection.close()

    launcher = threading.Thread(target=loop, daemon=True)
    launcher.start()
    try:
        yield
    finally:
        done.set()
        launcher.join(5)
        # A kill puts any task-set still running back in the queue untouched.
        Machine.order(Machine.objects.filter(pk__in=started), Machine.StopMode.KILL)
        for thread in threads:
            thread.join(15)
