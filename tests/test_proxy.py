"""`serve` behind the TLS proxy of docs/deploy.md: with DISTRIBUTOR_HTTPS the
proxy's X-Forwarded-Proto reaches Django (waitress drops it by default, and
every request would then be redirected to HTTPS, forever)."""
from __future__ import annotations

import http.client
import threading

import pytest

from distributor.management.commands.serve import web_server


@pytest.fixture
def behind_tls_proxy(settings):
    settings.HTTPS = True  # what DISTRIBUTOR_HTTPS=1 sets, as webapp/settings.py does
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["distributor.example"]


def get(port: int, headers: dict) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/login/", headers={"Host": "distributor.example", **headers})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.getheader("Location", "")


def test_serve_behind_the_tls_proxy_sees_https_and_redirects_plain_http(behind_tls_proxy):
    server = web_server("127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        assert get(server.effective_port, {"X-Forwarded-Proto": "https"})[0] == 200
        assert get(server.effective_port, {}) == (301, "https://distributor.example/login/")
    finally:
        server.trigger.pull_trigger(server.close)
