"""python manage.py campaign random|grow|status|list|advance|stop …"""
from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor.audit import cli_actor, record
from distributor.campaigns import generate, services
from distributor.campaigns.models import Campaign
from distributor.models import Target
from distributor.taskfile import TaskFileError

# Task fields a growing campaign draws, with the option that gives each.
GROW_FIELDS = ("arg1", "priority", "deadline", "period", "offset", "numberofjobs", "criticaltime", "caps",
               "cores", "coreoffset")


class Command(BaseCommand):
    help = "Generated (random, UUniFast) and growing campaigns of task-sets."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        rnd = sub.add_parser("random", help="one job of random task-sets (UUniFast)")
        self._common(rnd)
        rnd.add_argument("--tasks", type=int, required=True, help="tasks per set")
        rnd.add_argument("--utilisation", required=True, help="total U of a set, or lo:hi drawn per set")
        rnd.add_argument("--periods", required=True, help="lo:hi[:step] (ms) or a list a,b,c")
        rnd.add_argument("--distribution", default="loguniform", choices=["uniform", "loguniform"],
                         help="how periods are drawn from a range")
        rnd.add_argument("--pkg", required=True, help="package mix with weights, e.g. pi:3,tumatmul:1")
        rnd.add_argument("--count", type=int, required=True, help="task-sets")
        rnd.add_argument("--jobs", type=int, default=5, help="numberofjobs of every task")
        rnd.add_argument("--priorities", default="rm", choices=["rm", "edf", "random"])
        grow = sub.add_parser("grow", help="single tasks, then sets grown level by level from the successful ones")
        self._common(grow)
        grow.add_argument("--singles", type=int, required=True, help="distinct single tasks of level 1")
        grow.add_argument("--max-size", type=int, default=4, help="largest set size (the seeds stopped at 4)")
        grow.add_argument("--max-per-level", type=int, default=services.DEFAULT_MAX_PER_LEVEL,
                          help="at most this many sets per level (a seeded sample of the candidates)")
        grow.add_argument("--pkg", required=True, help="packages, e.g. pi,hey,tumatmul")
        grow.add_argument("--quota", default=None, help="quota values, e.g. 5M,10M")
        for field in GROW_FIELDS:
            grow.add_argument(f"--{field}", default=None, help="a value, a list a,b,c or a range lo:hi[:step]")
        status = sub.add_parser("status", help="a campaign's levels and progress")
        status.add_argument("campaign", type=int)
        status.add_argument("--json", action="store_true")
        sub.add_parser("list", help="all campaigns")
        advance = sub.add_parser("advance", help="move running campaigns on now (the reconciler does it every tick)")
        advance.add_argument("campaign", type=int, nargs="?")
        stop = sub.add_parser("stop", help="stop growing a campaign")
        stop.add_argument("campaign", type=int)
        stop.add_argument("--cancel-level", action="store_true",
                          help="also cancel its level's job (continue runs the rest of that level)")
        cont = sub.add_parser("continue", help="a stopped campaign continues where it stopped")
        cont.add_argument("campaign", type=int)

    def _common(self, parser):
        parser.add_argument("--name", default="")
        parser.add_argument("--target", default="", help="target pool (default: the default target)")
        parser.add_argument("--seed", type=int, required=True)

    def handle(self, *args, **opts):
        if opts.get("seed") is not None and not 0 <= opts["seed"] <= 2**63 - 1:  # Campaign.seed is a bigint
            raise CommandError("--seed: must be from 0 to 9223372036854775807")
        try:
            getattr(self, f"_{opts['action']}")(opts)
        except generate.ParameterError as error:
            raise CommandError(str(error)) from None
        except TaskFileError as error:
            raise CommandError(f"the generated task-set file was refused:\n{error}") from None
        except ValidationError as error:
            raise CommandError("; ".join(f"--{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None

    # -- actions ---------------------------------------------------------------

    def _random(self, opts):
        if not 1 <= opts["tasks"] <= 64:
            raise CommandError("--tasks: must be from 1 to 64")
        if not 1 <= opts["count"] <= services.MAX_PER_LEVEL:
            raise CommandError(f"--count: must be from 1 to {services.MAX_PER_LEVEL}")
        if opts["jobs"] < 1:
            raise CommandError("--jobs: must be at least 1")
        periods = generate.parse_choice("--periods", opts["periods"])
        if min(periods.get("list") or periods["range"][:2]) < 1:
            raise CommandError("--periods: must be at least 1 ms")
        params = generate.RandomParams(
            tasks=opts["tasks"], utilisation=generate.parse_span("--utilisation", opts["utilisation"], 0.0, 64.0),
            periods=periods, distribution=opts["distribution"], packages=generate.parse_weights("--pkg", opts["pkg"]),
            count=opts["count"], jobs=opts["jobs"], priorities=opts["priorities"],
        )
        name = opts["name"] or f"random n={params.tasks} U={opts['utilisation']} seed={opts['seed']}"
        campaign = services.create_random(name, self._target(opts["target"]), params, opts["seed"])
        self.stdout.write(json.dumps({"campaign": campaign.pk, "job": campaign.levels.get().job_id}))

    def _grow(self, opts):
        fields = {"pkg": generate.parse_choice("--pkg", opts["pkg"], integer=False)}
        if opts["quota"]:
            fields["quota"] = generate.parse_choice("--quota", opts["quota"], integer=False)
        for field in GROW_FIELDS:
            if opts[field] is not None:
                fields[field] = generate.parse_choice(f"--{field}", opts[field])
        name = opts["name"] or f"grow to {opts['max_size']} seed={opts['seed']}"
        campaign = services.create_growing(name, self._target(opts["target"]), fields, opts["singles"],
                                           opts["max_size"], opts["seed"], opts["max_per_level"])
        self.stdout.write(json.dumps({"campaign": campaign.pk, "level": campaign.level}))

    def _status(self, opts):
        report = services.status(self._campaign(opts["campaign"]))
        if opts["json"]:
            self.stdout.write(json.dumps(report, default=str))
            return
        self.stdout.write(f"campaign {report['campaign']} {report['name']!r}: {report['kind']}, {report['state']}, "
                          f"target {report['target']}, seed {report['seed']}")
        if report["last_error"]:
            self.stdout.write(f"  note: {report['last_error']}")
        for level in report["levels"]:
            self.stdout.write(f"  level {level['level']}: job {level['job']} ({level['job_state']}), "
                              f"{level['finished']}/{level['sets']} finished, {level['schedulable']} schedulable, "
                              f"{level['candidates']} candidates")

    def _list(self, opts):
        for campaign in Campaign.objects.select_related("target").order_by("id"):
            self.stdout.write(f"{campaign.pk}\t{campaign.kind}\t{campaign.state}\tlevel {campaign.level}\t"
                              f"{campaign.target.name}\t{campaign.name}")

    def _advance(self, opts):
        if opts["campaign"] is None:
            self.stdout.write(f"{services.advance_all()} campaign(s) moved on")
        else:
            moved = services.advance(self._campaign(opts["campaign"]))
            self.stdout.write("moved on" if moved else "nothing to do yet")

    def _stop(self, opts):
        stopped = services.stop(self._campaign(opts["campaign"]), cancel_level=opts["cancel_level"])
        if stopped:
            record(cli_actor(), "campaign-stop", f"campaign {opts['campaign']}", {"cancel_level": opts["cancel_level"]})
        self.stdout.write("stopped" if stopped else "it was not running")

    def _continue(self, opts):
        continued = services.resume(self._campaign(opts["campaign"]))
        if continued:
            record(cli_actor(), "campaign-continue", f"campaign {opts['campaign']}")
        self.stdout.write("continues where it stopped" if continued else "it was not stopped")

    # -- lookups ---------------------------------------------------------------

    def _campaign(self, pk: int) -> Campaign:
        try:
            return Campaign.objects.get(pk=pk)
        except Campaign.DoesNotExist:
            raise CommandError(f"campaign: no campaign {pk}") from None

    def _target(self, name: str) -> Target:
        if not name:
            return Target.default()
        try:
            return Target.objects.get(name=name)
        except Target.DoesNotExist:
            raise CommandError(f"--target: no target {name!r}") from None
