"""The QEMU pools' network: bridge, taps, dnsmasq — in a namespace of its own.

The namespace tests need root and iproute2's kernel features; where they are
missing the tests fail with the reason instead of skipping, because a skipped
network test would pass CI with the feature untested.
"""
from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
from django.core.management import call_command
from pyroute2 import IPRoute, netns

from distributor.environment import network_config
from sessions import qemu_network as network
from sessions.base import HostEnvironment, HostFault


def test_slot_macs_are_fixed_and_locally_administered():
    assert network.mac_address(0) == "0a:06:00:00:00:00"
    assert network.mac_address(10) == "0a:06:00:00:00:0a"
    assert network.mac_address(300) == "0a:06:00:00:01:2c"


def test_slot_addresses_follow_the_first_address(settings):
    settings.DISTRIBUTOR_BRIDGE_CIDR = "10.200.45.254/24"
    settings.DISTRIBUTOR_FIRST_ADDRESS = "10.200.45.1"
    settings.DISTRIBUTOR_CAP = 42
    cfg = network_config("")
    assert cfg.slots == 42
    assert network.guest_address(0, cfg) == "10.200.45.1"
    assert network.guest_address(41, cfg) == "10.200.45.42"
    with pytest.raises(network.NetworkError, match="slot 42 has no address"):
        network.guest_address(42, cfg)


def test_slots_stop_before_the_bridge_address(settings):
    settings.DISTRIBUTOR_BRIDGE_CIDR = "10.200.45.6/29"
    settings.DISTRIBUTOR_FIRST_ADDRESS = "10.200.45.1"
    assert network_config("").slots == 5


def test_dnsmasq_gets_one_fixed_host_per_slot_and_no_ping(settings):
    settings.DISTRIBUTOR_CAP = 3
    command = network.dnsmasq_command(network_config("ns"))
    hosts = [arg for arg in command if arg.startswith("--dhcp-host=")]
    assert hosts == ["--dhcp-host=0a:06:00:00:00:00,10.200.45.1", "--dhcp-host=0a:06:00:00:00:01,10.200.45.2",
                     "--dhcp-host=0a:06:00:00:00:02,10.200.45.3"]
    assert "--no-ping" in command and "--port=0" in command


def test_the_configuration_comes_from_the_hosts_settings(tmp_path, monkeypatch):
    """What the distributor builds from Django settings; sessions read none."""
    monkeypatch.delenv("DISTRIBUTOR_NETNS", raising=False)
    host = HostEnvironment(name="h", data_dir=tmp_path, settings={"DISTRIBUTOR_BRIDGE": "brq", "DISTRIBUTOR_CAP": 3})
    cfg = network.config(host)
    assert (cfg.bridge, cfg.netns, cfg.slots, cfg.tap_name(2)) == ("brq", "", 3, "tap2")
    assert cfg.state_dir == tmp_path / "network" / "host-brq"
    assert network.config(host, "ns").state_dir == tmp_path / "network" / "ns-brq"


def test_a_first_address_outside_the_network_is_refused(settings):
    settings.DISTRIBUTOR_FIRST_ADDRESS = "10.9.9.1"
    with pytest.raises(network.NetworkError, match="outside 10.200.45.0/24"):
        network_config("")


# -- in a namespace ----------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("network tests create network namespaces and need root (run them as root, as CI does)")


@pytest.fixture
def namespace(settings, tmp_path):
    """A fresh network namespace, torn down (bridge, taps, dnsmasq) afterwards."""
    require_root()
    name = f"dqnet{os.getpid()}"
    if name in netns.listnetns():
        netns.remove(name)
    netns.create(name)
    settings.DISTRIBUTOR_NETNS = name
    settings.DISTRIBUTOR_CAP = 4
    settings.DATA_DIR = tmp_path
    try:
        yield name
    finally:
        network.down(network_config(name))
        netns.remove(name)


def links(name: str) -> dict[str, dict]:
    with IPRoute(netns=name) as ipr:
        return {link.get("ifname"): link for link in ipr.get_links()}


def namespace_inode(name: str) -> int:
    return os.stat(f"/var/run/netns/{name}").st_ino


def dnsmasq_pid(cfg: network.NetworkConfig) -> int:
    return int(cfg.dnsmasq_pid_file.read_text())


@pytest.mark.network
@pytest.mark.slow
def test_network_up_creates_the_bridge_and_dnsmasq_in_the_namespace(namespace):
    call_command("network", "up")
    cfg = network_config()
    bridge = links(namespace)["br0"]
    assert bridge.get(("linkinfo", "kind")) == "bridge"
    with IPRoute(netns=namespace) as ipr:
        addresses = [(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=bridge["index"], family=socket.AF_INET)]
    assert addresses == [("10.200.45.254", 24)]
    pid = dnsmasq_pid(cfg)
    assert network.process_name(pid) == "dnsmasq"
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == namespace_inode(namespace)
    assert "br0" not in links_of_host()


def links_of_host() -> set[str]:
    with IPRoute() as ipr:
        return {link.get("ifname") for link in ipr.get_links()}


@pytest.mark.network
@pytest.mark.slow
def test_network_up_twice_keeps_one_dnsmasq(namespace):
    call_command("network", "up")
    first = dnsmasq_pid(network_config())
    call_command("network", "up")
    second = dnsmasq_pid(network_config())
    assert network.process_name(first) is None or first == second
    assert network.process_name(second) == "dnsmasq"


@pytest.mark.network
@pytest.mark.slow
def test_taps_are_attached_to_the_bridge_and_always_deletable(namespace):
    cfg = network.up(network_config())
    assert network.create_tap(0, cfg) == "tap0"
    assert network.create_tap(3, cfg) == "tap3"
    assert network.create_tap(0, cfg) == "tap0"  # a stale tap (a crashed machine's) is replaced
    found = links(namespace)
    bridge = found["br0"]["index"]
    assert found["tap0"].get_attr("IFLA_MASTER") == bridge == found["tap3"].get_attr("IFLA_MASTER")
    assert network.list_taps(cfg) == {0: "tap0", 3: "tap3"}
    network.delete_tap(0, cfg)
    network.delete_tap(0, cfg)  # absent: not an error
    assert network.cleanup_taps([], cfg) == ["tap3"]
    assert network.list_taps(cfg) == {}


@pytest.mark.network
@pytest.mark.slow
def test_cleanup_keeps_the_taps_of_live_machines(namespace):
    cfg = network.up(network_config())
    for slot in (0, 1, 2):
        network.create_tap(slot, cfg)
    assert network.cleanup_taps([1], cfg) == ["tap0", "tap2"]
    assert network.list_taps(cfg) == {1: "tap1"}


@pytest.mark.network
@pytest.mark.slow
def test_a_tap_without_the_bridge_is_refused_with_the_fix(namespace):
    with pytest.raises(network.NetworkError, match="network up"):
        network.create_tap(0, network_config())


@pytest.mark.network
@pytest.mark.slow
def test_network_down_leaves_no_tap_bridge_or_dnsmasq(namespace):
    call_command("network", "up")
    cfg = network_config()
    pid = dnsmasq_pid(cfg)
    network.create_tap(0, cfg)
    network.create_tap(1, cfg)
    call_command("network", "down")
    assert set(links(namespace)) == {"lo"}
    assert network.process_name(pid) is None
    assert not cfg.dnsmasq_pid_file.exists()
    call_command("network", "down")  # nothing left: still fine


@pytest.mark.network
@pytest.mark.slow
def test_a_tap_the_kernel_will_not_attach_is_a_network_error_a_host_fault(namespace):
    """The kernel's refusals (NetlinkError, no OSError) are the host's: a
    "bridge" that is no bridge cannot take a tap."""
    cfg = replace(network_config(), bridge="lo")
    with pytest.raises(network.NetworkError, match=r"cannot attach tap 'tap0' to bridge 'lo' .*Operation not supported"):
        network.create_tap(0, cfg)
    assert issubclass(network.NetworkError, HostFault)


@pytest.mark.network
@pytest.mark.slow
def test_a_tap_the_kernel_will_not_delete_is_a_network_error_a_host_fault(namespace):
    """Loopback cannot be deleted: renamed as slot 5's tap it stands for any
    tap the kernel refuses to remove, on every path that deletes one."""
    cfg = network_config()
    with IPRoute(netns=namespace) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], ifname="tap5")
    with pytest.raises(network.NetworkError, match=r"cannot delete tap 'tap5': .*Operation not supported"):
        network.delete_tap(5, cfg)
    with pytest.raises(network.NetworkError, match=r"cannot replace the stale tap 'tap5': .*Operation not supported"):
        network.create_tap(5, network.up(cfg))
