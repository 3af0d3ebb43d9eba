"""One submission path for the form and the API: check a file and its options,
and queue it only when asked to.

Errors come back keyed the way the user sees them: file paths such as
``tasksets[0].tasks[1].period`` from the task-set file, and option names
(``target``, ``offset``, …) for the rest. Nothing is written unless the whole
submission is valid (``submit_job`` stores one row in one statement).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from distributor import taskfile
from distributor.models import Job
from distributor.queue import check_options, submit_job


@dataclass
class Submission:
    data: bytes
    filename: str = ""
    target: str | None = None
    name: str = ""
    offset: int = 0
    tries: int | None = None
    priority: int = 0
    admission: dict | None = None
    monitors: list[str] = field(default_factory=list)
    notify: list[str] = field(default_factory=list)
    time_limit: int | None = None  # wall-clock seconds per task-set; None: from its task model
    notify_bad: bool = False


class SubmissionError(Exception):
    def __init__(self, file_errors: list[tuple[str, str]], option_errors: dict[str, str]):
        self.file_errors = file_errors
        self.option_errors = option_errors
        super().__init__(f"{len(file_errors)} file error(s), {len(option_errors)} option error(s)")

    def as_dict(self) -> dict[str, str]:
        """Every error by field: the file's paths under ``file``."""
        errors = {path if path == "file" else f"file:{path}": message for path, message in self.file_errors}
        return {**errors, **self.option_errors}


def check(sub: Submission) -> taskfile.ParsedFile:
    """Validate everything and store nothing; the parsed file tells the variant count."""
    try:
        parsed = taskfile.parse(sub.data, sub.filename)
    except taskfile.TaskFileError as error:
        # The options are checked against a one-variant stand-in so that the
        # user sees every error at once, not the file's first.
        raise SubmissionError(error.errors, _option_errors(None, sub)) from None
    option_errors = _option_errors(parsed, sub)
    if option_errors:
        raise SubmissionError([], option_errors)
    return parsed


def submit(sub: Submission, owner) -> Job:
    check(sub)
    try:
        job = submit_job(sub.data, filename=sub.filename, target=sub.target, name=sub.name, offset=sub.offset,
                         tries=sub.tries, priority=sub.priority, admission=sub.admission, monitors=sub.monitors,
                         notify=sub.notify, time_limit=sub.time_limit, notify_bad=sub.notify_bad, owner=owner)
    except taskfile.TaskFileError as error:  # checked above; kept for a file that changed meaning
        raise SubmissionError(error.errors, {}) from None
    except ValidationError as error:
        raise SubmissionError([], _messages(error)) from None
    return job


def _option_errors(parsed: taskfile.ParsedFile | None, sub: Submission) -> dict[str, str]:
    stand_in = parsed or taskfile.ParsedFile(spec={}, variant_count=2**63, format="")
    try:
        check_options(stand_in, target=sub.target, offset=sub.offset, tries=sub.tries, priority=sub.priority,
                      admission=sub.admission, monitors=sub.monitors, notify=sub.notify, time_limit=sub.time_limit,
                      notify_bad=sub.notify_bad, name=sub.name, filename=sub.filename)
    except ValidationError as error:
        return _messages(error)
    return {}


def _messages(error: ValidationError) -> dict[str, str]:
    return {key: " ".join(messages) for key, messages in error.message_dict.items()}
