"""The audit trail's one way in: every operator action, from the web, the API,
the command line or the admin, calls ``record`` once it has taken effect.
The rows are ``distributor.models.AuditEntry`` (append-only)."""
from __future__ import annotations

import getpass
import json

from django.core.serializers.json import DjangoJSONEncoder

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
