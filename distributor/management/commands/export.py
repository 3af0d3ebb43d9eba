"""python manage.py export --format FORMAT [--job ID …] [--state …] [--since DATE] --output FILE"""
from __future__ import annotations

from datetime import datetime, time, timezone as dt_timezone
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from distributor.exports import FORMATS, ExportError, Selection, export
from distributor.management.options import job_ids


class Command(BaseCommand):
    help = ("Export results for data mining: task-jobs or task-sets as CSV or Parquet, or everything as an "
            "SQLite file.")

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
        parser.add_argument("--job", action="append", default=[], help="only this job (repeatable)")
        parser.add_argument("--state", action="append", default=[],
                            help="only task-sets in this state: finished, bad, queued, running, cancelled (repeatable)")
        parser.add_argument("--since", default=None,
                            help="only task-sets ended at or after this date or time (ISO 8601, UTC if no zone)")
        parser.add_argument("--output", required=True, help="file to write (replaced when complete)")

    def handle(self, *args, **opts):
        if opts["format"] not in FORMATS:
            raise CommandError(f"--format: unknown format {opts['format']!r}; choose {', '.join(FORMATS)}")
        output = Path(opts["output"])
        if not output.parent.is_dir():
            raise CommandError(f"--output: folder {output.parent} does not exist")
        if output.is_dir():  # checked first: the export would run to the end and fail renaming onto it
            raise CommandError(f"--output: {output} is a folder; name a file")
        try:
            selection = Selection(jobs=self._jobs(opts["job"]), states=tuple(opts["state"]),
                                  since=self._since(opts["since"]))
            path = export(opts["format"], output, selection)
        except ExportError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(str(path))

    def _jobs(self, values: list[str]) -> tuple[int, ...]:
        return tuple(job_ids(values))

    def _since(self, value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            moment = parse_datetime(value)
            day = None if moment else parse_date(value)
        except ValueError:
            moment = day = None
        if moment is None and day is None:
            raise CommandError(f"--since: {value!r} is not a date (YYYY-MM-DD) or ISO 8601 time")
        moment = moment or datetime.combine(day, time.min)
        if moment.tzinfo is not None:
            try:
                moment.astimezone(dt_timezone.utc)  # 9999-12-31T23:59-05:00 has no UTC: the query overflowed
            except OverflowError:
                raise CommandError(f"--since: {value!r} is out of range (years 1 to 9999 in UTC)") from None
        return moment
