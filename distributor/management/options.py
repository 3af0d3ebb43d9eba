"""Option values the commands share, checked once: an error names the option."""
from __future__ import annotations

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
