"""python manage.py distributor status|max N|kill|shutdown|resume|reboot|slot TARGET:N maintenance|healthy|tick
|audit [--json] [--since DATE]|host NAME drain|resume|forget"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor import reconciler
from distributor.audit import cli_actor, entries, parse_since
from distributor.models import DistributorConfig, Host, Target
from distributor.status import overview

HOST_ACTIONS = ("drain", "resume", "forget")


class Command(BaseCommand):
    help = "The operator's controls: machine count, kill, shut down, resume, reboot, status."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status", help="busy/idle, machines and the queue")
        status.add_argument("--json", action="store_true")
        maximum = sub.add_parser("max", help="set the maximum number of machines (1..cap)")
        maximum.add_argument("count", type=int)
        sub.add_parser("kill", help="stop all machines now; their task-sets go back to the queue")
        sub.add_parser("shutdown", help="let all machines finish their task-set, then stop")
        sub.add_parser("resume", help="lift a kill or shutdown")
        sub.add_parser("reboot", help="reboot every target after its current task-set")
        slot = sub.add_parser("slot", help="put a pool's slot into maintenance or back in service")
        slot.add_argument("slot", metavar="TARGET:N", help="the target's name and the slot's index, e.g. boards:2")
        slot.add_argument("health", choices=["maintenance", "healthy"])
        slot.add_argument("--cause", default="", help="why (shown with the slot's health)")
        sub.add_parser("tick", help="reconcile once now (the schedule does it every minute)")
        audit = sub.add_parser("audit", help="the operators' actions, oldest first: who, when, what changed")
        audit.add_argument("--json", action="store_true", help="print a JSON array")
        audit.add_argument("--since", default=None, metavar="DATE", help="YYYY-MM-DD or an ISO date-time")
        audit.add_argument("--action", dest="only_action", default="", help="only this action (max, kill, reboot, …)")
        host = sub.add_parser("host", help="one host: drain (no new machines there), resume (lift the drain and "
                                           "its faults), forget (a dead host's rows)")
        host.add_argument("name")
        host.add_argument("host_action", choices=HOST_ACTIONS, metavar="{drain,resume,forget}")

    def handle(self, *args, action, **opts):
        if action == "status":
            return self._status(opts["json"])
        if action == "audit":
            return self._audit(opts)
        if action == "max":
            try:
                config = reconciler.set_max_machines_for(cli_actor(), opts["count"])
            except ValidationError as error:
                raise CommandError(f"max: {error.message_dict['max_machines'][0]}") from None
            self.stdout.write(f"max machines: {config.max_machines} (cap {config.cap})")
        elif action == "kill":
            killed = reconciler.control("kill", cli_actor())
            self.stdout.write(f"killing {killed} machine(s); 'distributor resume' to start again")
        elif action == "shutdown":
            self.stdout.write(f"shutting down {reconciler.control('shutdown', cli_actor())} machine(s) after their task-set")
        elif action == "resume":
            reconciler.control("resume", cli_actor())
            self.stdout.write("resumed")
        elif action == "reboot":
            self.stdout.write(f"{reconciler.control('reboot', cli_actor())} target(s) reboot after their task-set")
        elif action == "slot":
            self._slot(opts["slot"], opts["health"], opts["cause"])
        elif action == "tick":
            self.stdout.write(json.dumps(reconciler.tick()))
        elif action == "host":
            self._host(opts["name"], opts["host_action"])

    def _host(self, name: str, action: str) -> None:
        host = Host.objects.filter(name=name).first()
        if host is None:
            known = ", ".join(Host.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"host: no host named {name!r} (known: {known})")
        if action == "drain":
            told = reconciler.drain_host(host, cli_actor())
            self.stdout.write(f"host {name} drained: no new machines there; {told} machine(s) finish their "
                              f"task-set and stop")
        elif action == "resume":
            lifted = reconciler.resume_host(host, cli_actor())
            self.stdout.write(f"host {name} resumed ({lifted} fault(s) lifted)")
        else:
            timeout = DistributorConfig.get().heartbeat_timeout_s
            if host.is_live(timeout):
                raise CommandError(f"host: {name} is alive (it beat within {timeout} s): stop it before forgetting it")
            reconciler.forget_host(host, cli_actor())
            self.stdout.write(f"host {name} forgotten")

    def _audit(self, opts: dict) -> None:
        try:
            since = parse_since(opts["since"]) if opts["since"] else None
        except ValueError as error:
            raise CommandError(f"--since: {error}") from None
        rows = list(entries(since=since, action=opts["only_action"]).reverse())
        if opts["json"]:
            self.stdout.write(json.dumps([entry.as_dict() for entry in rows], indent=2))
            return
        if not rows:
            self.stdout.write("no action recorded" + (" since then" if since else ""))
        for entry in rows:
            line = f"{entry.at:%Y-%m-%d %H:%M:%S}  {entry.actor}  {entry.action}"
            self.stdout.write(" ".join(filter(None, (line, entry.subject, entry.changes_text))))

    def _slot(self, name: str, health: str, cause: str) -> None:
        target_name, _, index = name.rpartition(":")
        if not target_name or not index.isascii() or not index.isdigit() or len(index) > 5:
            raise CommandError(f"slot: {name!r} is not TARGET:N (a target's name and a slot's index, e.g. boards:2)")
        target = Target.objects.filter(name=target_name).first()
        if target is None:
            raise CommandError(f"slot: no target named {target_name!r}")
        if len(cause) > 1000:
            raise CommandError("slot: --cause is longer than 1000 characters")
        try:
            slot = reconciler.set_slot_health(target, int(index), health, cause, actor=cli_actor())
        except ValueError as error:
            raise CommandError(f"slot: {error}") from None
        self.stdout.write(f"slot {target.name}:{slot.index} {slot.health}"
                          + (" (its machine finishes its task-set, then stops)" if health == "maintenance" else ""))

    def _status(self, as_json: bool) -> None:
        status = overview()
        if as_json:
            self.stdout.write(json.dumps(status))
            return
        self.stdout.write(f"{status['state']}: max {status['max_machines']} of cap {status['cap']}, "
                          f"{len(status['machines'])} machine(s) live")
        for h in status["hosts"]:
            self.stdout.write(f"  host {h['name']}: {h['health']}, {h['machines']} of {h['capacity']} machine(s), "
                              f"heartbeat {_age(h['heartbeat_age_s'])}")
            for fault in h["faults"]:
                retry = f" (tried again at {fault['retry_at']})" if fault["retry_at"] else ""
                self.stdout.write(f"    cannot run target {fault['target']}: {fault['cause']}{retry}")
        for m in status["machines"]:
            mode = f" [{m['stop_mode']}]" if m["stop_mode"] else ""
            self.stdout.write(f"  machine {m['id']} {m['target']}:{m['slot']} {m['state']}{mode} — {m['activity']}"
                              f" ({m['tasksets_done']} done){' last error: ' + m['last_error'] if m['last_error'] else ''}")
        for s in status["slots"]:
            self.stdout.write(f"  slot {s['target']}:{s['slot']} {s['health']}{' — ' + s['cause'] if s['cause'] else ''}")
        for j in status["jobs"]:
            self.stdout.write(f"  job {j['id']} {j['name']}: {j['finished']} finished, {j['bad']} bad, "
                              f"{j['running']} running, {j['queued']} queued of {j['total']} ({j['percent']}%)")


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s ago"
