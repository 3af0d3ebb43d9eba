"""Numbers from query strings. ``str.isdigit`` also accepts '²' and '٣',
which ``int`` refuses, and a 30-digit id overflows the database's integers:
both would be a server error instead of an ignored filter."""
from __future__ import annotations

import re

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,18}")


def whole_number(raw: str | None, maximum: int = MAX_ID) -> int | None:
    """The non-negative integer in ``raw``, or None when it is not one (or too big)."""
    if raw is None or not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= maximum else None
