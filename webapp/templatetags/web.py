"""Filters for the numbers people read at a glance: durations, rates, bars."""
from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """3 s, 4 min 12 s, 2 h 05 min, 3 d 4 h: two units at most."""
    if seconds is None or seconds == "":
        return "—"
    seconds = int(max(float(seconds), 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def since(moment: datetime | None) -> str:
    if not moment:
        return "—"
    return duration((timezone.now() - moment).total_seconds())


@register.filter
def rate(per_minute) -> str:
    if per_minute is None:
        return "—"
    if per_minute >= 10:
        return f"{per_minute:,.0f}/min"
    if per_minute >= 1:
        return f"{per_minute:.1f}/min"
    return f"{per_minute * 60:.1f}/h"


@register.inclusion_tag("web/_bar.html")
def progress_bar(progress, big: bool = False) -> dict:
    return {"p": progress, "big": big}


@register.filter
def share(progress, part: str) -> float:
    return progress.share(part)


@register.filter
def elapsed(start: datetime | None, end: datetime | None) -> str:
    """How long from start to end ("—" until both are known)."""
    if not start or not end:
        return "—"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else duration(seconds)
