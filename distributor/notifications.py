"""Telling people a job has ended: a POST of a JSON document to each URL the
job was given (``notify``), or an e-mail carrying it to each ``mailto:``
address where the site's mail is set up, from a background task of the
default django-q2 cluster, never from a machine's loop.

The reconciler calls ``step`` on every tick (registered in apps.py): the
notifications of jobs that have ended become due, and each due one is taken
for one try (``Notification.claim_due``) and handed to ``deliver`` in the
background. A try that fails is made again after a pause that doubles, for an
hour; what happened is kept on the row and shown on the job page. A URL
that leads into the site's own network is refused (``distributor/egress.py``).

The document (``document``): ``event`` ("job.ended"), ``job``, ``name``,
``state``, ``counts`` (total, finished, bad, cancelled, …), ``links`` (the
API's job, the job page, its exports; absolute when ``DISTRIBUTOR_URL`` is
set), ``ended_at`` and ``sent_at``.

A job submitted with ``notify_bad`` also tells the same addresses when its
task-sets turn bad: the step makes one "taskset.bad" message per address at
most once a minute a job (``Notification.make_bad_due``), with ``bad_new``
(turned bad since the last message), ``bad_total`` and ``links.bad``, sent
and tried again like the end's.
"""
from __future__ import annotations

import json
import logging
import smtplib
import urllib.error

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from distributor import egress
from distributor.background import run_in_background
from distributor.exports import FORMATS
from distributor.models import Job, Notification

log = logging.getLogger("distributor")
TIMEOUT_SECONDS = 10


def step() -> list[int]:
    """Due notifications handed to the background; returns their ids."""
    Notification.make_due()
    Notification.make_bad_due()
    claimed = Notification.claim_due()
    for pk in claimed:
        run_in_background("distributor.notifications.deliver", pk, group="notifications")
    return claimed


def deliver(notification_id: int) -> str:
    """One try of one notification (a django-q2 task): POST the document,
    record the answer. Returns the notification's new state."""
    notification = Notification.objects.select_related("job__target").filter(pk=notification_id).first()
    if notification is None or notification.state != Notification.State.PENDING:
        return "nothing to send"
    if notification.url.startswith("mailto:"):
        return _mail(notification)
    body = json.dumps(document_of(notification)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "distributor-notify/1"}
    try:
        status = egress.post(notification.url, body, headers, TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        return notification.refused(f"HTTP {error.code} {error.reason}", error.code)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return notification.refused(f"{type(error).__name__}: {reason}")
    if not 200 <= status < 300:
        return notification.refused(f"HTTP {status}", status)
    notification.delivered(status)
    log.info("notified %s of %s of job %s (HTTP %s)", notification.url, notification.event, notification.job_id, status)
    return Notification.State.SENT


def _mail(notification: Notification) -> str:
    job = notification.job
    text = json.dumps(document_of(notification), indent=2)
    subject = (f"Job #{job.pk} {job.name}: {notification.bad_new} more task-set(s) bad"
               if notification.event == Notification.Event.TASKSET_BAD else f"Job #{job.pk} {job.name}: {job.state}")
    try:
        send_mail(subject, text, settings.SERVER_EMAIL,
                  [notification.url.removeprefix("mailto:")])
    except (OSError, smtplib.SMTPException) as error:
        return notification.refused(f"{type(error).__name__}: {error}")
    notification.delivered(None)
    return Notification.State.SENT


def document_of(notification: Notification) -> dict:
    """The job's end, or (taskset.bad) the task-sets turned bad since the
    last such message: ``bad_new``, ``bad_total`` and a link to them."""
    if notification.event != Notification.Event.TASKSET_BAD:
        return document(notification.job)
    data = document(notification.job, event=Notification.Event.TASKSET_BAD)
    data["links"]["bad"] = f"{data['links']['job']}/tasksets?state=bad"
    return {**data, "bad_new": notification.bad_new, "bad_total": notification.bad_total}


def document(job: Job, event: str = "job.ended") -> dict:
    job.refresh_from_db()  # its counts as they stand
    base = getattr(settings, "DISTRIBUTOR_URL", "").rstrip("/")
    return {
        "event": event, "job": job.pk, "name": job.name, "state": job.state, "target": job.target.name,
        "counts": job.progress(),
        "links": {"job": f"{base}/api/jobs/{job.pk}", "page": f"{base}/jobs/{job.pk}/",
                  "exports": {fmt: f"{base}/api/jobs/{job.pk}/export/{fmt}" for fmt in FORMATS}},
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "sent_at": timezone.now().isoformat(),
    }
