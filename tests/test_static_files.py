"""`serve`'s static files (issue 16, point 6): a path that escapes the static
roots is a 404, never a 500 and never a file outside them."""
from __future__ import annotations

import io

import pytest
from django.core.wsgi import get_wsgi_application

from distributor.management.commands.serve import StaticFiles


def get(path: str) -> tuple[str, bytes]:
    """One GET through the handler `serve` runs, as waitress would call it
    (PATH_INFO already percent-decoded, as WSGI servers pass it)."""
    from urllib.parse import unquote

    status = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": unquote(path, "latin-1"), "SERVER_NAME": "localhost",
               "SERVER_PORT": "8000", "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http",
               "HTTP_HOST": "localhost"}
    body = b"".join(StaticFiles(get_wsgi_application())(environ, lambda s, headers, *_: status.append(s)))
    return status[0], body


@pytest.mark.parametrize("path", [
    "/static/%2e%2e/%2e%2e/data/admin_password",
    "/static/../../data/secret_key",
    "/static/..%2f..%2fwebapp/settings.py",
    "/static/%2e%2e/README.md",
    "/static//etc/passwd",
    "/static/js/%00app.js",
    "/static/js/app.js%00.png",
    "/static/" + "%2e%2e/" * 40 + "etc/passwd",
])
def test_a_path_that_leaves_the_static_roots_is_a_404(db, path):
    status, body = get(path)
    assert status.startswith("404"), (path, status)
    assert b"root:" not in body and b"SECRET" not in body


def test_static_files_are_still_served(db):
    status, body = get("/static/js/app.js")
    assert status.startswith("200") and b"data-autosubmit" in body
