"""Expanding --hosts into one "host:port" per machine slot."""
from __future__ import annotations

import pytest

from sessions.addresses import expand_hosts, parse_address


def test_it_keeps_hosts_with_ports_in_order():
    assert expand_hosts("10.0.0.5:3001,10.0.0.6:3001") == ["10.0.0.5:3001", "10.0.0.6:3001"]


def test_bare_hosts_get_the_default_port():
    assert expand_hosts("10.0.0.5, board-1.lab") == ["10.0.0.5:3001", "board-1.lab:3001"]


def test_a_cidr_range_gives_its_host_addresses():
    assert expand_hosts("10.0.0.0/30:4000") == ["10.0.0.1:4000", "10.0.0.2:4000"]
    assert expand_hosts("10.0.0.8/31") == ["10.0.0.8:3001", "10.0.0.9:3001"]
    assert expand_hosts("10.0.0.9/32:5") == ["10.0.0.9:5"]


def test_ipv6_goes_in_brackets():
    assert expand_hosts("[::1]:3001,[2001:db8::/126]") == [
        "[::1]:3001", "[2001:db8::1]:3001", "[2001:db8::2]:3001", "[2001:db8::3]:3001"]
    assert parse_address("[::1]:4000") == ("::1", 4000)


@pytest.mark.parametrize("text, message", [
    ("", "no hosts given"),
    ("10.0.0.5,::1", r"'::1': write IPv6 addresses in brackets"),
    ("10.0.0.1/30:3001", r"'10.0.0.1/30:3001': not a CIDR range .*host bits set"),
    ("10.0.0.5:70000", r"'10.0.0.5:70000': port must be a number from 1 to 65535"),
    ("10.0.0.5:", r"port must be"),
    ("10.0.0.256", r"'10.0.0.256' is neither an IP address nor a host name"),
    ("bad_host", r"neither an IP address nor a host name"),
    ("[10.0.0.5]:3001", r"brackets are for IPv6 addresses only"),
    ("10.0.0.5,10.0.0.5:3001", r"10.0.0.5:3001 is listed twice"),
    ("10.0.0.0/8:3001", r"16777216 addresses; the limit is 1024"),
])
def test_bad_entries_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        expand_hosts(text)


def test_the_limit_counts_all_entries():
    assert len(expand_hosts("10.0.0.0/22,10.1.0.1,10.1.0.2")) == 1024
    with pytest.raises(ValueError, match="the limit is 1024"):
        expand_hosts("10.0.0.0/22,10.1.0.1,10.1.0.2,10.1.0.3")
