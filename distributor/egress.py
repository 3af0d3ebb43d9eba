"""Requests the server makes to addresses users give (a job's notify URLs).

Any user may submit a job, so a notify URL must not turn the server into a
way into its own network: a POST to ``http://127.0.0.1:6379/`` or to an
internal service, or a scan of internal ports through the errors the job page
shows. Unless the site allows it (``DISTRIBUTOR_NOTIFY_INTERNAL``), every
address a host name resolves to must be a global one; the connection is made
to the very address that was checked (a second lookup could answer another:
DNS rebinding), redirects are not followed (they could lead inside) and no
proxy of the environment is used.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings


class InternalAddress(OSError):
    """The URL leads into the site's own network, which the site does not allow."""


def internal_url(url: str) -> str | None:
    """Why ``url`` is refused before any lookup (its host is an internal IP
    address or ``localhost``), or None; a host name is checked when it is used."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if settings.DISTRIBUTOR_NOTIFY_INTERNAL:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this server (DISTRIBUTOR_NOTIFY_INTERNAL is off)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if _is_global(address) else f"{host} is an internal address (DISTRIBUTOR_NOTIFY_INTERNAL is off)"


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to ``url``; the HTTP status. Raises what urllib raises
    (HTTPError for an error status or a redirect) and InternalAddress."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with _OPENER.open(request, timeout=timeout) as response:
        return response.status


def _is_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return address.is_global and not address.is_multicast


def _connect(address: tuple[str, int], timeout=None, source_address=None) -> socket.socket:
    """``socket.create_connection`` to an address of ``host`` that was checked."""
    host, port = address
    candidates = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not settings.DISTRIBUTOR_NOTIFY_INTERNAL:
        for *_, sockaddr in candidates:
            if not _is_global(ipaddress.ip_address(sockaddr[0].split("%")[0])):
                raise InternalAddress(f"{host} resolves to {sockaddr[0]}, an internal address "
                                      "(DISTRIBUTOR_NOTIFY_INTERNAL is off)")
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in candidates:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, (int, float)):  # else http.client's "the default" marker
                sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error or OSError(f"{host} has no address")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect  # TLS then verifies the URL's host name over it


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, request):
        return self.do_open(_HTTPConnection, request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, request):
        return self.do_open(_HTTPSConnection, request, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx comes back as an HTTPError: refused, not followed


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _HTTPHandler, _HTTPSHandler, _NoRedirect)
