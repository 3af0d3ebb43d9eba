"""python manage.py serve [--port N] — web server and both clusters in one command."""
from __future__ import annotations

import signal

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.management.base import BaseCommand
from django.core.wsgi import get_wsgi_application

from distributor import processes


class Command(BaseCommand):
    help = "Run the web server and the default and machines clusters; Ctrl-C stops all of them."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    def handle(self, *args, port, host, **opts):
        from waitress import create_server

        # Bind first: a taken port must fail before any cluster starts.
        server = create_server(StaticFilesHandler(get_wsgi_application()), host=host, port=port, threads=8)
        processes.prepare()
        children = processes.start_clusters()
        signal.signal(signal.SIGTERM, lambda *_: server.close())
        self.stdout.write(f"Distributor at http://{host}:{port}/ — clusters running; Ctrl-C stops everything")
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("stopping machines, clusters and the web server…")
            server.close()
            processes.stop_clusters(children)
