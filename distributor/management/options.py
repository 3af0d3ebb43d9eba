"""Option values the commands share, checked once: an error names the option."""
from __future__ import annotations

import argparse

from pathlib import Path

from django.core.management.base import CommandError

from distributor.models import Job


def job_ids(values: list[str], option: str = "--job") -> list[int]:
    """Ids of existing jobs. Only ASCII digits that fit a 64-bit id ("²" is a
    digit to isdigit, and 10^30 overflows the column); the first unknown id
    is named."""
    ids = []
    for value in values:
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise CommandError(f"{option}: {value!r} is not a job id")
        ids.append(int(value))
    missing = sorted(set(ids) - set(Job.objects.filter(pk__in=ids).values_list("pk", flat=True)))
    if missing:
        raise CommandError(f"{option}: no job {missing[0]}")
    return ids


def read_input(name: str) -> bytes:
    """The bytes of the file a command was given; a folder, a missing or an
    unreadable file is refused naming the cause."""
    path = Path(name)
    if path.is_dir():
        raise CommandError(f"{name}: is a folder, not a file")
    if not path.is_file():
        raise CommandError(f"{name}: no such file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(f"{name}: cannot read ({error.strerror or error})") from None


def add_stop_options(parser) -> None:
    """How ``serve``, ``workers`` and the clusters they start stop (distributor/processes.py)."""
    from distributor.processes import DEFAULT_GRACE_SECONDS, STOP_MODES

    parser.add_argument("--stop", choices=STOP_MODES, default="drain",
                        help="on SIGTERM or Ctrl-C: drain (each machine finishes its task-set; default) or kill "
                             "(task-sets go back to the queue untouched); a second signal kills")
    parser.add_argument("--grace", type=_grace_seconds, default=DEFAULT_GRACE_SECONDS, metavar="SECONDS",
                        help=f"the longest a drain may take before it becomes a kill (default {DEFAULT_GRACE_SECONDS:g})")


def _grace_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds from 0 to 604800")
    return seconds
