"""Target addresses: "host:port" strings, one per machine slot.

The seeds' command-line tool took a comma-separated list of hosts and CIDR
ranges; a pool stores the expanded list so that slot *i* always means the
same board. IPv6 addresses go in brackets ("[2001:db8::5]:3001") because a
bare IPv6 address cannot be told apart from a host with a port.
"""
from __future__ import annotations

import ipaddress
import re

DEFAULT_PORT = 3001
# A pool is a list of machine slots shown on one page and claimed one by one;
# a typo such as /16 instead of /28 must not create 65,534 of them.
MAX_ADDRESSES = 1024
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>[^:]*))?$")


def expand_hosts(text: str, default_port: int = DEFAULT_PORT, limit: int = MAX_ADDRESSES) -> list[str]:
    """Expand "a:p,b,10.0.0.0/30:p,[::1]:p" into "host:port" strings.

    Bare hosts get ``default_port``; a CIDR range yields its host addresses
    (not the network and broadcast addresses). Raises ValueError naming the
    bad entry, a duplicate, or a list longer than ``limit``.
    """
    entries = [entry.strip() for entry in (text or "").split(",")]
    if not any(entries):
        raise ValueError("no hosts given (expected e.g. 10.0.0.5:3001,10.0.0.0/30:3001)")
    addresses: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        if not entry:
            continue
        for address in _expand_entry(entry, default_port, limit - len(addresses), limit):
            if address in seen:
                raise ValueError(f"{entry!r}: address {address} is listed twice (one slot per target)")
            seen.add(address)
            addresses.append(address)
    return addresses


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split one "host:port" (or bare host) into host and port; the host of an
    IPv6 address comes back without brackets, ready for socket calls."""
    host, port = _split(text.strip(), default_port)
    if "/" in host:
        raise ValueError(f"{text!r}: a range is not a single address")
    _check_host(text, host)
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _expand_entry(entry: str, default_port: int, room: int, limit: int) -> list[str]:
    host, port = _split(entry, default_port)
    if "/" not in host:
        _check_host(entry, host)
        hosts = [str(ipaddress.ip_address(host)) if _is_ip(host) else host.lower()]
    else:
        hosts = _expand_range(entry, host, room, limit)
    if len(hosts) > room:
        raise ValueError(f"{entry!r}: more than {limit} addresses in all; the limit is {limit} per pool")
    return [format_address(one, port) for one in hosts]


def _split(entry: str, default_port: int) -> tuple[str, int]:
    bracketed = _BRACKETED.match(entry)
    if bracketed:
        host, port_text = bracketed["host"], bracketed["port"]
        if ":" not in host:
            raise ValueError(f"{entry!r}: brackets are for IPv6 addresses only")
    elif entry.count(":") > 1:
        raise ValueError(f"{entry!r}: write IPv6 addresses in brackets, e.g. [{entry}]:{default_port}")
    elif ":" in entry:
        host, port_text = entry.split(":")
    else:
        host, port_text = entry, None
    return host, _port(entry, port_text, default_port)


def _port(entry: str, port_text: str | None, default_port: int) -> int:
    if port_text is None:
        return default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{entry!r}: port must be a number from 1 to 65535")
    return int(port_text)


def _check_host(entry: str, host: str) -> None:
    if _is_ip(host):
        return
    if ":" in host or not _HOST_NAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise ValueError(f"{entry!r}: {host!r} is neither an IP address nor a host name")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _expand_range(entry: str, cidr: str, room: int, limit: int) -> list[str]:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as error:
        raise ValueError(f"{entry!r}: not a CIDR range ({error})") from None
    # Counted before expanding: a /8 must fail at once, not after 16 million hosts.
    if network.num_addresses - 2 > room:
        raise ValueError(f"{entry!r}: {network.num_addresses} addresses; the limit is {limit} per pool")
    return [str(host) for host in network.hosts()]
