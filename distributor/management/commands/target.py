"""`target add` / `target edit` / `target list` / `target remove`: target pools.

    python manage.py target add boards --kind genode --hosts 10.0.0.5:3001,10.0.0.0/30:3001 --set ping=true
    python manage.py target add panda --kind board --hosts 10.0.1.7 --set "power_on=poe on {slot}" ...
    python manage.py target edit boards --set etm=board-a --unset ping

A pool with addresses has one machine slot per address. Values of --set are
JSON when they parse as JSON (true, 2.5, "x", [1]) and plain strings
otherwise, so commands with spaces need no extra quoting. Everything is
validated by the model (and the kind's settings check) before anything is
written; an error names the field.
"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from distributor.audit import cli_actor, record
from distributor.models import Machine, Target
from distributor.taskfile import DepthError, load_json
from sessions.addresses import expand_hosts

SHOWN_ADDRESSES = 4


class Command(BaseCommand):
    help = "Manage target pools: add, edit, list, remove."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{add,edit,list,remove}")
        add = actions.add_parser("add", help="create a pool")
        add.add_argument("name")
        add.add_argument("--kind", required=True, help="session kind: genode, board, qemu, simso, stdio, …")
        add.add_argument("--hosts", default="", help="HOST[:PORT],… or CIDR:PORT (one machine slot per address)")
        add.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                         help="a setting of the kind (repeatable); VALUE is JSON if it parses, else a string")
        add.add_argument("--host", default="", help="the distributor host whose machines cluster runs this pool")
        add.add_argument("--default", action="store_true", help="make this the default pool for new jobs")
        edit = actions.add_parser("edit", help="change a pool's settings (validated as by add)")
        edit.add_argument("name")
        edit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                          help="set a setting (repeatable), e.g. etm=MODEL; VALUE is JSON if it parses")
        edit.add_argument("--unset", action="append", default=[], metavar="KEY", help="remove a setting (repeatable)")
        listing = actions.add_parser("list", help="show the pools")
        listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
        remove = actions.add_parser("remove", help="delete a pool that no job uses")
        remove.add_argument("name")

    def handle(self, *args, action: str, **options) -> None:
        {"add": self._add, "edit": self._edit, "list": self._list, "remove": self._remove}[action](options)

    # -- add -------------------------------------------------------------------

    def _add(self, options: dict) -> None:
        target = Target(
            name=options["name"],
            kind=options["kind"],
            settings=parse_settings(options["set_values"]),
            addresses=_hosts(options["hosts"]),
            host=options["host"],
            is_default=options["default"],
        )
        try:
            with transaction.atomic():
                target.full_clean()
                target.save()
        except ValidationError as error:
            raise CommandError(_describe(error)) from None
        record(cli_actor(), "target-add", target.name, {
            "kind": target.kind, "settings": target.settings, "addresses": target.addresses,
            "host": target.host, "is_default": target.is_default})
        self.stdout.write(f"target {target.name}: kind {target.kind}, capacity {_capacity(target)}"
                          f"{', default' if target.is_default else ''}")

    # -- edit ------------------------------------------------------------------

    def _edit(self, options: dict) -> None:
        changes = parse_settings(options["set_values"])
        if not changes and not options["unset"]:
            raise CommandError("give --set KEY=VALUE or --unset KEY")
        with transaction.atomic():
            target = Target.objects.select_for_update().filter(name=options["name"]).first()
            if target is None:
                raise CommandError(f"name: no target named {options['name']!r}")
            before = dict(target.settings or {})
            for key in options["unset"]:
                if key not in before:
                    raise CommandError(f"settings.{key}: not set on {target.name}")
            target.settings = {**{k: v for k, v in before.items() if k not in options["unset"]}, **changes}
            try:
                target.full_clean()
            except ValidationError as error:
                raise CommandError(_describe(error)) from None
            target.save(update_fields=["settings"])
            record(cli_actor(), "target-edit", target.name, {"settings": [before, target.settings]})
        self.stdout.write(f"target {target.name}: settings={json.dumps(target.settings, sort_keys=True)}")

    # -- list ------------------------------------------------------------------

    def _list(self, options: dict) -> None:
        targets = list(Target.objects.order_by("name"))
        if options["json"]:
            rows = [_as_dict(target) for target in targets]
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not targets:
            self.stdout.write("no targets (python manage.py target add NAME --kind KIND …)")
            return
        for target in targets:
            self.stdout.write(_line(target))

    # -- remove ----------------------------------------------------------------

    def _remove(self, options: dict) -> None:
        name = options["name"]
        with transaction.atomic():
            target = Target.objects.select_for_update().filter(name=name).first()
            if target is None:
                raise CommandError(f"name: no target named {name!r}")
            jobs = target.jobs.count()
            if jobs:
                raise CommandError(f"{name}: used by {jobs} job(s); a pool with results cannot be removed")
            live = target.machines.filter(state__in=Machine.LIVE_STATES).count()
            if live:
                raise CommandError(f"{name}: {live} machine(s) still run on it; stop them first")
            target.machines.all().delete()  # the history of machines that ran no job of it
            target.delete()
            record(cli_actor(), "target-remove", name)
        self.stdout.write(f"target {name} removed")


def parse_settings(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; a VALUE that parses as JSON is taken as JSON."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"--set {pair!r}: expected KEY=VALUE")
        if key in settings:
            raise CommandError(f"settings.{key}: given twice")
        try:
            settings[key] = load_json(value)
        except DepthError as error:
            raise CommandError(f"settings.{key}: {error}") from None
        except ValueError:
            settings[key] = value
    return settings


def _hosts(text: str) -> list[str]:
    if not text:
        return []
    try:
        return expand_hosts(text)
    except ValueError as error:
        raise CommandError(f"hosts: {error}") from None


def _describe(error: ValidationError) -> str:
    if not hasattr(error, "error_dict"):
        return "; ".join(error.messages)
    return "\n".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())


def _capacity(target: Target):
    try:
        capacity = target.capacity
    except KeyError:  # a kind that is no longer installed
        return "?"
    return "cap" if capacity is None else capacity


def _as_dict(target: Target) -> dict:
    return {
        "name": target.name, "kind": target.kind, "default": target.is_default, "capacity": _capacity(target),
        "host": target.host, "addresses": target.addresses, "settings": target.settings,
    }


def _line(target: Target) -> str:
    addresses = target.addresses
    shown = ", ".join(addresses[:SHOWN_ADDRESSES])
    if len(addresses) > SHOWN_ADDRESSES:
        shown += f", … ({len(addresses)} in all)"
    parts = [
        f"{target.name}{' (default)' if target.is_default else ''}",
        f"kind={target.kind}",
        f"capacity={_capacity(target)}",
    ]
    if target.host:
        parts.append(f"host={target.host}")
    if addresses:
        parts.append(f"addresses=[{shown}]")
    parts.append(f"settings={json.dumps(target.settings, sort_keys=True)}")
    return "  ".join(parts)
