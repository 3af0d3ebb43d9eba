"""python manage.py serve [--port N] — web server and both clusters in one command."""
from __future__ import annotations

import signal

from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.core.management.base import BaseCommand
from django.core.wsgi import get_wsgi_application
from django.http import Http404

from distributor import processes


class StaticFiles(StaticFilesHandler):
    """The static files of `serve`: a path that leaves the static roots
    (``/static/%2e%2e/%2e%2e/data/admin_password``) or names no file the
    filesystem can hold (a NUL) is a 404 like any missing file, not a 500."""

    def get_response(self, request):
        try:
            return super().get_response(request)
        except (SuspiciousOperation, ValueError):
            return response_for_exception(request, Http404("no such static file"))


# Waitress holds a request's body before Django sees it: no body larger than
# the largest upload (a boot image) plus its form fields.
MAX_BODY_BYTES = max(settings.BINARY_MAX_BYTES, settings.IMAGE_MAX_BYTES) + 1024 * 1024


class Command(BaseCommand):
    help = "Run the web server and the default and machines clusters; Ctrl-C stops all of them."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    def handle(self, *args, port, host, **opts):
        from waitress import create_server

        # Bind first: a taken port must fail before any cluster starts.
        server = create_server(StaticFiles(get_wsgi_application()), host=host, port=port, threads=8,
                               max_request_body_size=MAX_BODY_BYTES)
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
