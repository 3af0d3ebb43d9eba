"""The audit trail's page (staff): every operator action, newest first, with
who did it and what changed; filtered by action, actor and a start date."""
from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from distributor.audit import entries, parse_since
from distributor.models import AuditEntry
from webapp.access import staff_required

PER_PAGE = 100


@staff_required
def audit(request: HttpRequest) -> HttpResponse:
    action = request.GET.get("action", "").strip()
    actor = request.GET.get("actor", "").strip()
    since_text = request.GET.get("since", "").strip()
    error, since = "", None
    if since_text:
        try:
            since = parse_since(since_text)
        except ValueError as problem:
            error = f"Since: {problem}"
    rows = entries(since=since, action=action, actor=actor) if not error else AuditEntry.objects.none()
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    actions = AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct()
    query = urlencode({key: value for key, value in (("action", action), ("actor", actor), ("since", since_text))
                       if value})
    return render(request, "web/audit.html", {
        "page": page, "action": action, "actor": actor, "since": since_text, "error": error,
        "actions": list(actions), "query": query,
    }, status=400 if error else 200)
