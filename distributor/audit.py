"""The audit trail's one way in: every operator action, from the web, the API,
the command line or the admin, calls ``record`` once it has taken effect.
The rows are ``distributor.models.AuditEntry`` (append-only)."""
from __future__ import annotations

import getpass
import json
from datetime import datetime, time, timezone as dt_timezone

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from distributor.models.audit import AuditEntry


def record(actor: str, action: str, subject: str = "", changes: dict | None = None) -> None:
    """Store one operator action. ``changes`` is made JSON-safe here (dates,
    decimals, UUIDs become strings) so callers can pass what they have."""
    safe = json.loads(json.dumps(changes or {}, cls=DjangoJSONEncoder, default=str))
    AuditEntry.objects.create(actor=str(actor)[:160], action=str(action)[:40], subject=str(subject)[:300],
                              changes=safe)


def cli_actor() -> str:
    """Who acts from the command line: ``cli:<login>`` (the login of the
    process, as ``getpass`` finds it; ``unknown`` when it cannot)."""
    try:
        login = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (a bare container)
        login = "unknown"
    return f"cli:{login}"


def user_actor(user) -> str:
    """Who acts from the web, the API or the admin: the user's name."""
    return user.get_username() if user is not None and user.is_authenticated else "anonymous"


UPLOAD_ACTIONS = {"binary": "binary-upload", "bootimage": "image-upload"}


def record_upload(actor: str, item, replaced: bool) -> None:
    """A binary or boot image stored (``Upload.store``): its name, checksum and
    size, and whether it replaced a file of the same name."""
    record(actor, UPLOAD_ACTIONS[item._meta.model_name], item.name,
           {"sha256": item.sha256, "size": item.size, "replaced": replaced})


def form_changes(form) -> dict:
    """What a valid model form is about to change, read before its save: for
    a row that exists, ``{field: [old, new]}`` of the fields whose value
    differs from the stored one; for a new row, ``{field: value}`` as given."""
    instance = form.instance
    fields = [name for name in form.cleaned_data if name in {f.name for f in instance._meta.concrete_fields}]
    new = {name: form.cleaned_data[name] for name in fields}
    if instance.pk is None:
        return new
    old = type(instance).objects.filter(pk=instance.pk).values(*fields).first() or {}
    return {name: [old.get(name), value] for name, value in new.items() if old.get(name) != value}


RECENT = 8  # actions shown on the dashboard


def parse_since(text: str) -> datetime:
    """``2026-12-05`` (that day's start, in the site's time zone) or an ISO
    date-time (``2026-12-05T14:30``, with or without an offset). ValueError
    names the formats."""
    try:
        moment = parse_datetime(text) or (datetime.combine(day, time()) if (day := parse_date(text)) else None)
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or a date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])")
    moment = timezone.make_aware(moment) if timezone.is_naive(moment) else moment
    try:
        moment.astimezone(dt_timezone.utc)  # the database compares in UTC: 9999-12-31T23:59-05:00 has no UTC
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (years 1 to 9999 in UTC)") from None
    return moment


def entries(since: datetime | None = None, action: str = "", actor: str = "") -> QuerySet:
    """The trail, newest first, optionally from a moment on, of one action or actor."""
    rows = AuditEntry.objects.order_by("-at", "-id")
    if since is not None:
        rows = rows.filter(at__gte=since)
    if action:
        rows = rows.filter(action=action)
    if actor:
        rows = rows.filter(actor=actor)
    return rows


def recent(limit: int = RECENT) -> list[AuditEntry]:
    return list(entries()[:limit])
