"""python manage.py etm list | show NAME | import FILE | export NAME | fit --job N --name M | calibrate …

Execution-time models stored in the database (docs/etm.md):

    python manage.py etm list [--json]
    python manage.py etm show genode-defaults [--version 1]
    python manage.py etm import model.json [--name NAME]          # the next version of NAME, typed in
    python manage.py etm export genode-defaults [--version 1] [-o FILE]
    python manage.py etm fit --job 12 [--job 13] --name board-a   # from any finished jobs
    python manage.py etm calibrate --target T --pkg pi,hey --args 0:10 [--jobs 5] --name board-a [--wait]

``calibrate --wait`` prints one JSON line: {"name", "version", "job", "calibrated", "target", "error"}.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from distributor import calibration
from distributor.audit import cli_actor, record
from distributor.calibration import CalibrationError
from distributor.management.commands.submit import inline_machines, wait_for
from distributor.management.options import job_ids, read_input
from distributor.models import EtmModel, EtmVersion, Target
from distributor.taskfile import DepthError, load_json
from sessions.etm import MAX_FILE_BYTES


class Command(BaseCommand):
    help = "Execution-time models: list, show, import, export, fit from jobs, calibrate on a target."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True,
                                        metavar="{list,show,import,export,fit,calibrate}")
        listing = actions.add_parser("list", help="the models, their newest version and the targets using them")
        listing.add_argument("--json", action="store_true", help="print JSON")
        show = actions.add_parser("show", help="a model's versions and figures")
        show.add_argument("name")
        show.add_argument("--version", type=int, default=None, help="one version (default: all, newest figures)")
        imported = actions.add_parser("import", help="store a JSON model file as the next version of its name")
        imported.add_argument("file", help="a JSON file as export writes it, or - for standard input")
        imported.add_argument("--name", default=None, help="store under this name (default: the file's name field)")
        export = actions.add_parser("export", help="print a version as JSON")
        export.add_argument("name")
        export.add_argument("--version", type=int, default=None, help="default: the newest")
        export.add_argument("-o", "--output", default=None, help="write to this file instead of standard output")
        fit = actions.add_parser("fit", help="fit the next version from finished jobs' measurements")
        fit.add_argument("--job", action="append", default=[], help="a finished job (repeatable)")
        fit.add_argument("--name", required=True, help="the model to fit the next version of")
        fit.add_argument("--statistic", choices=("max", "mean"), default=None,
                         help="the figure a point uses (default: the model's own, else max)")
        calibrate = actions.add_parser("calibrate", help="submit a calibration job; its end fits the model")
        calibrate.add_argument("--target", required=True)
        calibrate.add_argument("--pkg", required=True, help="package(s), comma-separated")
        calibrate.add_argument("--args", required=True, dest="arg_range", metavar="A:B", help="A:B, the arg1 values to measure (inclusive)")
        calibrate.add_argument("--jobs", type=int, default=5, help="jobs per package and arg1 (default 5)")
        calibrate.add_argument("--name", required=True, help="the model to fit the next version of")
        calibrate.add_argument("--period", type=int, default=None,
                               help="period in ms (default: 4 × the target's current figure, at least 1000)")
        calibrate.add_argument("--wait", action="store_true", help="wait for the fit; print one JSON line")
        calibrate.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many s")
        calibrate.add_argument("--inline", action="store_true",
                               help="with --wait: run the job's machines in this process (no cluster needed)")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"_{action}")(options)

    # -- list, show, export ----------------------------------------------------------

    def _list(self, options: dict) -> None:
        rows = [calibration.summary(model) for model in EtmModel.objects.order_by("name")]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            self.stdout.write(f"{row['name']}  v{row['version']}  "
                              f"{'calibrated on ' + row['target'] if row['calibrated'] else 'typed in'}  "
                              f"packages={len(row['packages'])}  targets={','.join(row['targets']) or '-'}")

    def _show(self, options: dict) -> None:
        model = _model(options["name"])
        versions = model.versions.order_by("version")
        if options["version"] is not None:
            versions = versions.filter(version=options["version"])
            if not versions:
                raise CommandError(f"--version: {model.name} has no version {options['version']}")
        for version in versions:
            self.stdout.write(f"{model.name} v{version.version}  {version.source}"
                              f"{' on ' + version.target if version.target else ''}"
                              f"{'  jobs ' + ','.join(map(str, version.jobs)) if version.jobs else ''}"
                              f"  {version.created_at:%Y-%m-%d %H:%M}")
            if version.note:
                self.stdout.write(f"  note: {version.note}")
        shown = versions.last()
        for pkg, term in sorted(shown.document.get("packages", {}).items()):
            points = term.get("points", {})
            line = (f"{term['base_ms']} + {term.get('per_arg_ms', 0)}·arg1 ms" if "base_ms" in term else "no line")
            measured = "  ".join(f"{arg}: {p['ms']} ms (n={p.get('count', '?')}, spread {p.get('spread', '?')})"
                                 for arg, p in sorted(points.items(), key=lambda item: int(item[0])))
            self.stdout.write(f"  {pkg}: {line}{'  points ' + measured if measured else ''}")
        default = shown.document["default"]
        self.stdout.write(f"  (any other package: {default['base_ms']} + {default.get('per_arg_ms', 0)}·arg1 ms, "
                          "flagged unknown on the labels)")

    def _export(self, options: dict) -> None:
        version = _version(_model(options["name"]), options["version"])
        text = version.export()
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stdout.write(f"{version} written to {options['output']}")
        else:
            self.stdout.write(text, ending="")

    # -- import --------------------------------------------------------------------

    def _import(self, options: dict) -> None:
        document = _read_document(options["file"])
        name = options["name"] or document.get("name")
        if not isinstance(name, str):
            raise CommandError("name: give --name or a name field in the file")
        try:
            version = EtmModel.add_version(name, {**document, "name": name, "version": 1})
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        record(cli_actor(), "etm-import", str(version))
        self.stdout.write(f"{version}: typed in, {len(version.document.get('packages', {}))} packages")

    # -- fit, calibrate --------------------------------------------------------------

    def _fit(self, options: dict) -> None:
        if not options["job"]:
            raise CommandError("--job: give at least one finished job")
        try:
            version = calibration.fit(job_ids(options["job"]), options["name"], statistic=options["statistic"])
        except CalibrationError as error:
            raise CommandError(f"--{error.field}: {error.message}") from None
        except ValidationError as error:
            raise CommandError("; ".join(f"--{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        record(cli_actor(), "etm-fit", str(version), {"jobs": version.jobs})
        self.stdout.write(json.dumps(calibration.fitted_line(version)))

    def _calibrate(self, options: dict) -> None:
        target = Target.objects.filter(name=options["target"]).first()
        if target is None:
            raise CommandError(f"--target: no target named {options['target']!r}")
        pkgs = [pkg.strip() for pkg in options["pkg"].split(",") if pkg.strip()]
        try:
            request = calibration.submit(target, pkgs, calibration.parse_args(options["arg_range"]), options["jobs"],
                                         options["name"], period_ms=options["period"])
        except CalibrationError as error:
            raise CommandError(f"--{error.field}: {error.message}") from None
        except ValidationError as error:
            raise CommandError("; ".join(f"--{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        record(cli_actor(), "etm-calibrate", f"target {target.name}",
               {"model": options["name"], "pkg": pkgs, "args": options["arg_range"], "jobs": options["jobs"],
                "job": request.job_id})
        if not options["wait"]:
            self.stdout.write(str(request.job_id))
            return
        if options["inline"]:
            with inline_machines(request.job):
                ended = wait_for(request.job, options["timeout"])
        else:
            ended = wait_for(request.job, options["timeout"])
        if ended["state"] in ("queued", "running"):
            raise CommandError(f"--timeout: job {request.job_id} still {ended['state']}; "
                               f"it is fitted when it ends (etm show {options['name']})")
        version = calibration.finish(request)
        request.refresh_from_db()
        self.stdout.write(json.dumps({**calibration.fitted_line(version, options["name"]), "job": request.job_id,
                                      "error": request.error or None}))
        if version is None:
            raise CommandError(f"calibration job {request.job_id}: {request.error}")


def _model(name: str) -> EtmModel:
    model = EtmModel.named(name)
    if model is None:
        raise CommandError(f"name: no execution-time model named {name!r} (etm list)")
    return model


def _version(model: EtmModel, number: int | None) -> EtmVersion:
    version = model.latest if number is None else model.versions.filter(version=number).first()
    if version is None:
        raise CommandError(f"--version: {model.name} has no version {number}")
    return version


def _read_document(name: str) -> dict:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        data = read_input(name)[:MAX_FILE_BYTES + 1]
    if len(data) > MAX_FILE_BYTES:
        raise CommandError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        document = load_json(data.decode("utf-8"))
    except (UnicodeDecodeError, DepthError, ValueError) as error:
        raise CommandError(f"{name}: not a JSON model ({error})") from None
    if not isinstance(document, dict):
        raise CommandError(f"{name}: the model must be a JSON object")
    return document
