"""python manage.py distributor status|max N|kill|shutdown|resume|reboot|tick"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor import reconciler
from distributor.status import overview


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
        sub.add_parser("tick", help="reconcile once now (the schedule does it every minute)")

    def handle(self, *args, action, **opts):
        if action == "status":
            return self._status(opts["json"])
        if action == "max":
            try:
                config = reconciler.set_max_machines(opts["count"])
            except ValidationError as error:
                raise CommandError(f"max: {error.message_dict['max_machines'][0]}") from None
            self.stdout.write(f"max machines: {config.max_machines} (cap {config.cap})")
        elif action == "kill":
            self.stdout.write(f"killing {reconciler.kill_all()} machine(s); 'distributor resume' to start again")
        elif action == "shutdown":
            self.stdout.write(f"shutting down {reconciler.shut_down_all()} machine(s) after their task-set")
        elif action == "resume":
            reconciler.resume()
            self.stdout.write("resumed")
        elif action == "reboot":
            self.stdout.write(f"{reconciler.reboot_all()} target(s) reboot after their task-set")
        elif action == "tick":
            self.stdout.write(json.dumps(reconciler.tick()))

    def _status(self, as_json: bool) -> None:
        status = overview()
        if as_json:
            self.stdout.write(json.dumps(status))
            return
        self.stdout.write(f"{status['state']}: max {status['max_machines']} of cap {status['cap']}, "
                          f"{len(status['machines'])} machine(s) live")
        for m in status["machines"]:
            mode = f" [{m['stop_mode']}]" if m["stop_mode"] else ""
            self.stdout.write(f"  machine {m['id']} {m['target']}:{m['slot']} {m['state']}{mode} — {m['activity']}"
                              f" ({m['tasksets_done']} done){' last error: ' + m['last_error'] if m['last_error'] else ''}")
        for j in status["jobs"]:
            self.stdout.write(f"  job {j['id']} {j['name']}: {j['finished']} finished, {j['bad']} bad, "
                              f"{j['running']} running, {j['queued']} queued of {j['total']} ({j['percent']}%)")
