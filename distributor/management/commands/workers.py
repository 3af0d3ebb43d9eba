"""python manage.py workers [--stop drain|kill] [--grace S] — this host's two clusters, without a web server."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from distributor import processes
from distributor.management.options import add_stop_options


class Command(BaseCommand):
    help = ("Run the default and machines django-q2 clusters of this host until SIGTERM or Ctrl-C "
            "(machines drained, or killed with --stop kill).")

    def add_arguments(self, parser):
        add_stop_options(parser)

    def handle(self, *args, stop, grace, **opts):
        launcher = processes.Launcher(stop, grace)
        launcher.start()
        self.stdout.write(f"clusters running (pids {', '.join(str(c.pid) for c in launcher.children)}); "
                          "Ctrl-C stops them")
        ended = launcher.wait()
        self.stdout.write(f"stopping machines and clusters: {launcher.describe_stop()}")
        launcher.stop()
        if ended:
            raise CommandError(ended)
