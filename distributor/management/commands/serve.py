"""python manage.py serve [--port N] [--stop drain|kill] [--grace S] — web server and both clusters in one command."""
from __future__ import annotations

import argparse
import threading

from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.core.management.base import BaseCommand, CommandError
from django.core.wsgi import get_wsgi_application
from django.http import Http404

from distributor import processes
from distributor.management.options import add_stop_options


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


def tcp_port(value: str) -> int:
    """A port number; waitress would take 99999 and listen on 34463 (its
    lower 16 bits) while serve printed 99999."""
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number from 1 to 65535")
    return int(value)


def web_server(host: str, port: int):
    """Waitress on ``host:port``. Behind the TLS proxy (DISTRIBUTOR_HTTPS) the
    proxy's X-Forwarded-Proto and X-Forwarded-For reach Django, which trusts
    them then (SECURE_PROXY_SSL_HEADER, the login throttle's address): waitress
    drops them by default, and a site whose every request looked like plain
    HTTP would redirect to itself forever. Listen where only the proxy
    reaches (the default 127.0.0.1)."""
    from waitress import create_server

    return create_server(StaticFiles(get_wsgi_application()), host=host, port=port, threads=8,
                         max_request_body_size=MAX_BODY_BYTES, clear_untrusted_proxy_headers=not settings.HTTPS)


class Command(BaseCommand):
    help = ("Run the web server and the default and machines clusters; SIGTERM or Ctrl-C stops all of them "
            "(machines drained, or killed with --stop kill).")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=tcp_port, default=8000, help="port to listen on, 1-65535 (default 8000)")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        add_stop_options(parser)

    def handle(self, *args, port, host, stop, grace, **opts):
        server = web_server(host, port)  # bound first: a taken port must fail before any cluster starts
        launcher = processes.Launcher(stop, grace)
        launcher.start()
        # The web answers in a thread of its own until the clusters have stopped
        # (the dashboard shows the drain); the main thread waits for a signal.
        web = threading.Thread(target=server.run, name="web server", daemon=True)
        web.start()
        self.stdout.write(f"Distributor at http://{host}:{port}/ — clusters running; Ctrl-C stops everything")
        ended = launcher.wait(web)
        self.stdout.write(f"stopping machines, clusters and the web server: {launcher.describe_stop()}")
        launcher.stop()
        server.task_dispatcher.shutdown()
        if ended:
            raise CommandError(ended)
