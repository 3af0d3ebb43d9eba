"""python manage.py purge --before DATE [--events] [--consoles] [--logs] [--contents] [--dry-run]

Removes the raw events of jobs that ended before DATE and the machine
consoles and logs last written before it (none of a live machine); never
task-jobs, task-sets or their outcomes. Without --events, --consoles or
--logs it removes those three. --contents (only when asked) removes the
uploaded contents that no upload names any more and only jobs ended before
DATE ran. --dry-run reports the same counts and changes nothing. See
distributor/purge.py.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from distributor.audit import cli_actor, parse_since, record
from distributor.purge import Purged, purge_contents, purge_events, purge_files

KINDS = ("events", "consoles", "logs")


class Command(BaseCommand):
    help = ("Remove raw events of ended jobs, and consoles and machine logs, older than --before "
            "(never task-jobs or outcomes). --dry-run reports and changes nothing.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--before", required=True, metavar="DATE",
                            help="YYYY-MM-DD or an ISO date-time: jobs that ended and files last written before it")
        parser.add_argument("--events", action="store_true", help="the raw events of ended jobs")
        parser.add_argument("--consoles", action="store_true", help="target consoles (DATA_DIR/consoles)")
        parser.add_argument("--logs", action="store_true", help="machine logs (LOG_DIR/machines)")
        parser.add_argument("--contents", action="store_true",
                            help="uploaded contents no upload names and only jobs ended before DATE ran "
                                 "(only when asked: not part of the default)")
        parser.add_argument("--dry-run", action="store_true", help="report what would go; change nothing")

    def handle(self, *args, **opts) -> None:
        try:
            before = parse_since(opts["before"])
        except ValueError as error:
            raise CommandError(f"--before: {error}") from None
        if before > timezone.now():
            raise CommandError(f"--before: {opts['before']} is in the future")
        kinds = [kind for kind in KINDS if opts[kind]] or ([] if opts["contents"] else list(KINDS))
        if opts["contents"]:
            kinds.append("contents")
        dry = opts["dry_run"]
        done = Purged()
        verb = "would remove" if dry else "removed"
        if "events" in kinds:
            done.jobs, done.events = purge_events(before, dry_run=dry)
            self.stdout.write(f"events: {verb} {done.events:,} raw events of {done.jobs:,} job(s) ended before "
                              f"{before:%Y-%m-%d %H:%M %Z} (task-jobs and outcomes kept)")
        for kind in ("consoles", "logs"):
            if kind in kinds:
                done.files[kind], done.bytes[kind] = purge_files(kind, before, dry_run=dry)
                self.stdout.write(f"{kind}: {verb} {done.files[kind]:,} file(s), {done.bytes[kind]:,} bytes")
        if "contents" in kinds:
            done.files["contents"], done.bytes["contents"] = purge_contents(before, dry_run=dry)
            self.stdout.write(f"contents: {verb} {done.files['contents']:,} uploaded content(s), "
                              f"{done.bytes['contents']:,} bytes (the jobs keep their checksums)")
        if dry:
            self.stdout.write("dry run: nothing was changed")
        else:
            record(cli_actor(), "purge", f"before {before.isoformat()}", {"kinds": kinds, **done.as_dict()})
