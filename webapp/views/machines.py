"""Machines: the list, one machine's page with its live console, its logs
and the task-sets it ran.

Console and log paths are built from the machine's row (target name and
slot, both validated when stored), never from the request, and are checked
to lie inside their folder.
"""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from distributor.models import Machine, TaskSet
from webapp.access import login_required

TAIL_BYTES = 64 * 1024
MACHINES_PER_PAGE = 50
HISTORY_PER_PAGE = 25
# Terminal escapes and control characters other than newline and tab: a
# console shows them as garbage, and some would move the cursor around.
_TERMINAL_NOISE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def console_path(machine: Machine) -> Path:
    return _inside(settings.DATA_DIR / "consoles", f"{machine.target.name}-{machine.slot}.log")


def log_path(machine: Machine) -> Path:
    return _inside(settings.LOG_DIR / "machines", f"{machine.target.name}-{machine.slot}.log")


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise Http404("no such file")
    return path


def tail(path: Path, size: int = TAIL_BYTES) -> tuple[str, bool]:
    """The last ``size`` bytes as text, starting at a whole line; and whether it was cut."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            length = handle.tell()
            handle.seek(max(length - size, 0))
            data = handle.read(size)
    except (FileNotFoundError, IsADirectoryError):
        return "", False
    cut = length > size
    if cut and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return _TERMINAL_NOISE.sub("", data.decode("utf-8", "replace").replace("\r\n", "\n")), cut


def _machine_or_404(machine_id: int) -> Machine:
    return get_object_or_404(Machine.objects.select_related("target", "current__job"), pk=machine_id)


@login_required
def machines(request: HttpRequest) -> HttpResponse:
    live = list(Machine.objects.filter(state__in=Machine.LIVE_STATES).select_related("target").order_by("target__name", "slot"))
    ended = Machine.objects.exclude(state__in=Machine.LIVE_STATES).select_related("target").order_by("-pk")
    state = request.GET.get("state", "")
    if state in Machine.State.values:
        ended = ended.filter(state=state)
    page = Paginator(ended, MACHINES_PER_PAGE).get_page(request.GET.get("page"))
    ended_states = [s for s in Machine.State.values if s not in Machine.LIVE_STATES]
    return render(request, "web/machines.html", {"live": live, "page": page, "state": state, "states": ended_states})


@login_required
def machine(request: HttpRequest, machine_id: int) -> HttpResponse:
    machine = _machine_or_404(machine_id)
    history = TaskSet.objects.filter(machine=machine).select_related("job").order_by("-pk")
    text, cut = tail(console_path(machine))
    return render(request, "web/machine.html", {
        "machine": machine, "page": Paginator(history, HISTORY_PER_PAGE).get_page(request.GET.get("page")),
        "console": text, "cut": cut, "has_log": log_path(machine).is_file(),
        "has_console": console_path(machine).is_file(),
    })


@login_required
def console(request: HttpRequest, machine_id: int) -> HttpResponse:
    """The polled console tail: plain escaped text for a <pre>."""
    text, cut = tail(console_path(_machine_or_404(machine_id)))
    return render(request, "web/_console.html", {"console": text, "cut": cut})


@login_required
def download(request: HttpRequest, machine_id: int, kind: str) -> HttpResponse:
    if kind not in ("log", "console"):
        raise Http404("no such file")
    machine = _machine_or_404(machine_id)
    path = log_path(machine) if kind == "log" else console_path(machine)
    if not path.is_file():
        raise Http404(f"machine {machine.pk} has no {kind} file")
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{machine.target.name}-{machine.slot}-{kind}.log",
                        content_type="text/plain; charset=utf-8")
