"""Clean-up for long campaigns (``manage.py purge``): the raw events of ended
jobs, and the consoles and machine logs nothing writes any more.

Only evidence goes: task-jobs, task-sets, their outcomes and labels stay, so
exports and analyses of a purged job are unchanged (the task-set page then
has no raw events to show). Events are deleted in chunks of task-sets, each
chunk its own statement and transaction: a table of hundreds of millions of
rows is never locked or rewritten at once, and an interrupted purge leaves
whole chunks done and can simply be run again.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings

from distributor.models import Binary, Blob, BootImage, Event, Job, JobContent, Machine, TaskSet

ENDED = (Job.State.FINISHED, Job.State.CANCELLED)
CHUNK_TASKSETS = 200  # task-sets whose events go in one statement (a few hundred thousand rows at most)
SLOT_FILE = re.compile(r"(?P<slot>.+)\.log(\.\d+)?")  # "<target>-<slot>.log" and its rotated ".log.N"


@dataclass
class Purged:
    """What a purge removed (or, dry, would remove)."""

    jobs: int = 0
    events: int = 0
    files: dict[str, int] = field(default_factory=dict)  # "consoles"/"logs" → files, "contents" → contents
    bytes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "events": self.events, "files": self.files, "bytes": self.bytes}


def ended_jobs(before: datetime):
    """Jobs that ended (finished or cancelled) before ``before``; a running or
    queued job is never touched, whatever its age."""
    return Job.objects.filter(state__in=ENDED, ended_at__lt=before)


def purge_events(before: datetime, *, dry_run: bool, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """(jobs, events) of the ended jobs' raw events, removed unless ``dry_run``."""
    jobs = list(ended_jobs(before).order_by("pk").values_list("pk", flat=True))
    if dry_run:
        return len(jobs), Event.objects.filter(taskset__job_id__in=jobs).count() if jobs else 0
    deleted = 0
    for job in jobs:
        last = 0
        while True:
            ids = list(TaskSet.objects.filter(job_id=job, pk__gt=last).order_by("pk")
                       .values_list("pk", flat=True)[:CHUNK_TASKSETS])
            if not ids:
                break
            deleted += Event.purge_of_tasksets(ids)
            last = ids[-1]
            if progress:
                progress(deleted)
    return len(jobs), deleted


def purge_contents(before: datetime, *, dry_run: bool) -> tuple[int, int]:
    """(contents, bytes) of the uploaded contents (binaries, boot images)
    that no upload names any more and only jobs ended before ``before`` name
    (JobContent): removed unless ``dry_run``, one content per statement. The
    jobs keep saying which checksums they ran; a job reopened later finds its
    content gone and its task-sets end bad saying so."""
    contents = size = 0
    for sha256, content_size in list(_unwanted(before).values_list("sha256", "size")):
        # Asked again as it goes: a job submitted meanwhile keeps its content.
        if dry_run or _unwanted(before).filter(pk=sha256).delete()[0]:
            contents, size = contents + 1, size + content_size
    return contents, size


def _unwanted(before: datetime):
    """The contents no upload names and no job but those ended before ``before``."""
    wanted_by_jobs = JobContent.objects.exclude(job__in=ended_jobs(before)).values("sha256")
    return (Blob.objects.exclude(pk__in=Binary.objects.values("sha256"))
            .exclude(pk__in=BootImage.objects.values("sha256")).exclude(pk__in=wanted_by_jobs))


def purge_files(kind: str, before: datetime, *, dry_run: bool) -> tuple[int, int]:
    """(files, bytes) of the consoles or machine logs last written before
    ``before`` whose slot has no live machine (a file being written stays)."""
    folder = {"consoles": settings.DATA_DIR / "consoles", "logs": settings.LOG_DIR / "machines"}[kind]
    if not folder.is_dir():
        return 0, 0
    live = {f"{name}-{slot}" for name, slot in
            Machine.objects.filter(state__in=Machine.LIVE_STATES).values_list("target__name", "slot")}
    files = size = 0
    for path in sorted(folder.iterdir()):
        match = SLOT_FILE.fullmatch(path.name)
        if not match or not path.is_file() or match["slot"] in live:
            continue
        stat = path.stat()
        if stat.st_mtime >= before.timestamp():
            continue
        if not dry_run:
            _remove(path)
        files, size = files + 1, size + stat.st_size
    return files, size


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:  # rotated away meanwhile
        pass
