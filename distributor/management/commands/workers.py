"""python manage.py workers — this host's two clusters, without a web server."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from distributor import processes


class Command(BaseCommand):
    help = "Run the default and machines django-q2 clusters of this host until Ctrl-C."

    def handle(self, *args, **opts):
        processes.prepare()
        children = processes.start_clusters()
        self.stdout.write(f"clusters running (pids {', '.join(str(c.pid) for c in children)}); Ctrl-C stops them")
        try:
            processes.wait_any(children)
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("stopping machines and clusters…")
            processes.stop_clusters(children)
