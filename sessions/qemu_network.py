"""The network of a QEMU pool: a bridge, one tap per machine slot, DHCP.

Machine slot *i* gets tap ``<prefix><i>`` attached to the bridge, the MAC
``0a:06:00:00:<i // 256>:<i % 256>`` (``0a:06:00:00:00:<i hex>`` below 256) and
the address ``first address + i``, handed out by a dnsmasq that knows exactly
one ``--dhcp-host`` per slot, so a rebooted guest always comes back at the
same address. Everything may live inside a named network namespace, which is
how the tests (and cautious operators) run it: nothing then touches the
host's own interfaces.

Taps are persistent kernel objects: a QEMU that dies leaves its tap behind.
The machine deletes its tap on every exit path (``delete_tap``); the tap of
a machine that died without doing so is deleted when the reconciler declares
it dead (``QemuSession.reap``), and when the host's clusters start
``QemuSession.clean_up_host`` calls ``cleanup_taps`` with the slots that are
still alive.

``config`` builds the configuration from the settings of the host
(``sessions.base.HostEnvironment``, which the distributor fills from its
Django settings); every other function is given it. The settings (all
optional; defaults in brackets):

- ``DISTRIBUTOR_BRIDGE`` — bridge name [``br0``]
- ``DISTRIBUTOR_BRIDGE_CIDR`` — the bridge's address and prefix, which is also
  the guests' network [``10.200.45.254/24``]
- ``DISTRIBUTOR_FIRST_ADDRESS`` — the address of slot 0 [``10.200.45.1``]
- ``DISTRIBUTOR_TAP_PREFIX`` — tap *i* is named prefix + i [``tap``]
- ``DISTRIBUTOR_NETNS`` — network namespace to work in, "" = the host's own
  [the environment variable ``DISTRIBUTOR_NETNS``, else ""]
- ``DISTRIBUTOR_CAP`` — number of slots that get a DHCP entry (capped by the
  addresses the network has) [42]
- the host's ``data_dir`` (``DATA_DIR``) — dnsmasq's pid, lease and log files
  go to ``DATA_DIR/network/<netns or "host">-<bridge>/``
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import signal
import socket
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from sessions.base import HostEnvironment, HostFault

DNSMASQ = "dnsmasq"
DHCP_LEASE = "12h"


class NetworkError(HostFault):
    """The network could not be set up or torn down; the message names why.
    A host's fault: a machine that meets it leaves its task-set untouched."""


@dataclass(frozen=True)
class NetworkConfig:
    bridge: str
    interface: ipaddress.IPv4Interface
    first_address: ipaddress.IPv4Address
    tap_prefix: str
    netns: str
    slots: int
    state_dir: Path

    @property
    def dnsmasq_pid_file(self) -> Path:
        return self.state_dir / "dnsmasq.pid"

    def tap_name(self, slot: int) -> str:
        name = f"{self.tap_prefix}{slot}"
        if len(name) > 15:
            raise NetworkError(f"tap name {name!r} is longer than the kernel's 15 characters")
        return name


def config(host: HostEnvironment, netns_name: str | None = None) -> NetworkConfig:
    """The configuration from the host's settings; ``netns_name`` overrides
    DISTRIBUTOR_NETNS."""
    settings = host.settings
    bridge = settings.get("DISTRIBUTOR_BRIDGE", "br0")
    cidr = settings.get("DISTRIBUTOR_BRIDGE_CIDR", "10.200.45.254/24")
    try:
        interface = ipaddress.IPv4Interface(cidr)
        first = ipaddress.IPv4Address(settings.get("DISTRIBUTOR_FIRST_ADDRESS", "10.200.45.1"))
    except ValueError as error:
        raise NetworkError(f"DISTRIBUTOR_BRIDGE_CIDR / DISTRIBUTOR_FIRST_ADDRESS: {error}") from None
    if first not in interface.network:
        raise NetworkError(f"DISTRIBUTOR_FIRST_ADDRESS {first} is outside {interface.network}")
    namespace = netns_name if netns_name is not None else settings.get("DISTRIBUTOR_NETNS")
    if namespace is None:
        namespace = os.environ.get("DISTRIBUTOR_NETNS", "")
    wanted = int(settings.get("DISTRIBUTOR_CAP", 42))
    state_dir = Path(host.data_dir) / "network" / f"{namespace or 'host'}-{bridge}"
    return NetworkConfig(bridge, interface, first, settings.get("DISTRIBUTOR_TAP_PREFIX", "tap"),
                         namespace, min(wanted, _usable_slots(interface, first)), state_dir)


def _usable_slots(interface: ipaddress.IPv4Interface, first: ipaddress.IPv4Address) -> int:
    """Slots before the first address that is the bridge's own or the broadcast."""
    end = int(interface.network.broadcast_address)
    if int(interface.ip) > int(first):
        end = min(end, int(interface.ip))
    return max(0, end - int(first))


# -- per slot -------------------------------------------------------------------


def mac_address(slot: int) -> str:
    """The fixed MAC of slot *i*: locally administered, unicast (0a:…)."""
    if not 0 <= slot < 65536:
        raise NetworkError(f"slot {slot} is outside 0..65535")
    return f"0a:06:00:00:{slot >> 8:02x}:{slot & 0xFF:02x}"


def guest_address(slot: int, cfg: NetworkConfig) -> str:
    if not 0 <= slot < cfg.slots:
        raise NetworkError(f"slot {slot} has no address: the network {cfg.interface.network} "
                           f"from {cfg.first_address} holds {cfg.slots} slots")
    return str(cfg.first_address + slot)


def _ipr(cfg: NetworkConfig) -> IPRoute:
    if cfg.netns and cfg.netns not in netns.listnetns():
        raise NetworkError(f"network namespace {cfg.netns!r} does not exist (create it with `ip netns add`)")
    return IPRoute(netns=cfg.netns) if cfg.netns else IPRoute()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def create_tap(slot: int, cfg: NetworkConfig) -> str:
    """Create tap *slot* fresh (a stale one from a crash is replaced), attach
    it to the bridge and bring it up; returns its name. Any refusal of the
    kernel is a NetworkError (a HostFault): NetlinkError is no OSError, and
    escaping as itself it would fail the slot, not mark the host."""
    name = cfg.tap_name(slot)
    with _ipr(cfg) as ipr:
        bridge = _index(ipr, cfg.bridge)
        if bridge is None:
            raise NetworkError(f"bridge {cfg.bridge!r} does not exist: run `python manage.py network up` first")
        with _refused(f"cannot replace the stale tap {name!r}"):
            stale = _index(ipr, name)
            if stale is not None:
                ipr.link("del", index=stale)
        with _refused(f"cannot create tap {name!r}"):
            ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        with _refused(f"cannot attach tap {name!r} to bridge {cfg.bridge!r} and bring it up"):
            ipr.link("set", index=_index(ipr, name), master=bridge, state="up")
    return name


def delete_tap(slot: int, cfg: NetworkConfig) -> None:
    """Delete tap *slot*; an absent tap (or namespace) is not an error, so
    every exit path may call it. A tap the kernel refuses to delete is a
    NetworkError."""
    if cfg.netns and cfg.netns not in netns.listnetns():
        return
    name = cfg.tap_name(slot)
    with _ipr(cfg) as ipr:
        index = _index(ipr, name)
        if index is not None:
            try:
                ipr.link("del", index=index)
            except NetlinkError as error:
                if error.code != errno.ENODEV:  # deleted meanwhile
                    raise NetworkError(f"cannot delete tap {name!r}: {error}") from None


@contextmanager
def _refused(what: str) -> Iterator[None]:
    """A NetlinkError inside the block as a NetworkError saying what failed."""
    try:
        yield
    except NetlinkError as error:
        raise NetworkError(f"{what}: {error}") from None


def list_taps(cfg: NetworkConfig) -> dict[int, str]:
    """Slot → name of every tap device that carries our prefix."""
    if cfg.netns and cfg.netns not in netns.listnetns():
        return {}
    pattern = re.compile(rf"^{re.escape(cfg.tap_prefix)}(\d+)$")
    taps = {}
    with _ipr(cfg) as ipr:
        for link in ipr.get_links():
            match = pattern.match(link.get("ifname") or "")
            if match and link.get(("linkinfo", "kind")) == "tun":
                taps[int(match.group(1))] = match.group(0)
    return taps


def cleanup_taps(keep_slots: Iterable[int], cfg: NetworkConfig) -> list[str]:
    """Delete the taps of every slot not in ``keep_slots`` (machines that died
    without cleaning up); returns the names deleted."""
    keep = set(keep_slots)
    deleted = []
    for slot, name in sorted(list_taps(cfg).items()):
        if slot not in keep:
            delete_tap(slot, cfg)
            deleted.append(name)
    return deleted


@contextmanager
def inside_namespace(cfg: NetworkConfig) -> Iterator[None]:
    """Run a block with the calling *thread* in the namespace: sockets it
    creates there stay there. Other threads (a machine's heartbeat and its
    database connections) are untouched, since setns(2) is per thread."""
    if not cfg.netns:
        yield
        return
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(cfg.netns, flags=0)
        yield
    finally:
        netns.setns(original)
        os.close(original)


def connect(address: str, timeout: float, cfg: NetworkConfig) -> socket.socket:
    """A TCP connection to "host:port" made from inside the namespace, where
    the guests are."""
    host, _, port = address.rpartition(":")
    with inside_namespace(cfg):
        return socket.create_connection((host, int(port)), timeout=timeout)


def enter_namespace_in_child(cfg: NetworkConfig):
    """A preexec_fn for a child (QEMU, dnsmasq) that must run in the namespace."""
    if not cfg.netns:
        return None
    name = cfg.netns

    def enter() -> None:
        netns.setns(name, flags=0, fork=False)

    return enter


# -- the bridge and DHCP ----------------------------------------------------------


def up(cfg: NetworkConfig) -> NetworkConfig:
    """Create (or repair) the bridge with its address and (re)start dnsmasq;
    running it twice is harmless."""
    _ensure_bridge(cfg)
    stop_dnsmasq(cfg)
    start_dnsmasq(cfg)
    return cfg


def down(cfg: NetworkConfig) -> list[str]:
    """Stop dnsmasq, delete every tap and the bridge; returns what was removed."""
    removed = []
    if stop_dnsmasq(cfg):
        removed.append("dnsmasq")
    removed += cleanup_taps((), cfg)
    if cfg.netns and cfg.netns not in netns.listnetns():
        return removed
    with _ipr(cfg) as ipr:
        index = _index(ipr, cfg.bridge)
        if index is not None:
            ipr.link("del", index=index)
            removed.append(cfg.bridge)
    return removed


def _ensure_bridge(cfg: NetworkConfig) -> None:
    with _ipr(cfg) as ipr:
        index = _index(ipr, cfg.bridge)
        if index is None:
            try:
                ipr.link("add", ifname=cfg.bridge, kind="bridge")
            except NetlinkError as error:
                raise NetworkError(f"cannot create bridge {cfg.bridge!r}: {error}") from None
            index = _index(ipr, cfg.bridge)
        elif ipr.get_links(index)[0].get(("linkinfo", "kind")) != "bridge":
            raise NetworkError(f"{cfg.bridge!r} exists and is not a bridge")
        present = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=socket.AF_INET)}
        if (str(cfg.interface.ip), cfg.interface.network.prefixlen) not in present:
            ipr.addr("add", index=index, address=str(cfg.interface.ip), prefixlen=cfg.interface.network.prefixlen)
        ipr.link("set", index=index, state="up")


def dnsmasq_command(cfg: NetworkConfig) -> list[str]:
    """DHCP only (no DNS), one fixed address per slot, nothing else."""
    state = cfg.state_dir
    command = [
        DNSMASQ, "--conf-file=/dev/null", "--port=0", "--no-hosts", "--no-resolv",
        f"--interface={cfg.bridge}", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={cfg.interface.network.network_address},static,{cfg.interface.network.netmask},{DHCP_LEASE}",
        "--dhcp-authoritative", "--no-ping",
        f"--dhcp-leasefile={state / 'dnsmasq.leases'}",
        f"--pid-file={cfg.dnsmasq_pid_file}",
        f"--log-facility={state / 'dnsmasq.log'}", "--log-dhcp",
    ]
    command += [f"--dhcp-host={mac_address(slot)},{cfg.first_address + slot}" for slot in range(cfg.slots)]
    return command


def start_dnsmasq(cfg: NetworkConfig) -> int:
    """Start dnsmasq and return its pid; it daemonises, and its pid file is
    how ``stop_dnsmasq`` finds it again from another process."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    # It drops privileges after start-up but keeps writing its lease and log files.
    os.chmod(cfg.state_dir, 0o755)
    try:
        result = subprocess.run(dnsmasq_command(cfg), capture_output=True, text=True, timeout=30,
                                preexec_fn=enter_namespace_in_child(cfg))
    except FileNotFoundError:
        raise NetworkError("dnsmasq is not installed (apt-get install dnsmasq-base)") from None
    if result.returncode != 0:
        raise NetworkError(f"dnsmasq failed to start: {result.stderr.strip() or result.returncode}")
    pid = _dnsmasq_pid(cfg)
    if pid is None:
        raise NetworkError(f"dnsmasq started but wrote no pid to {cfg.dnsmasq_pid_file}")
    return pid


def _dnsmasq_pid(cfg: NetworkConfig) -> int | None:
    """The pid from the pid file if that process is still a dnsmasq."""
    try:
        pid = int(cfg.dnsmasq_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_name(pid) == DNSMASQ else None


def process_name(pid: int) -> str | None:
    """The command name of a live process; None for a gone or zombie one (a
    daemon's zombie lingers until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return None if rest.split()[0] in ("Z", "X") else name


def stop_dnsmasq(cfg: NetworkConfig, timeout: float = 10.0) -> bool:
    """Stop our dnsmasq and wait for it to be gone; True if one was running."""
    pid = _dnsmasq_pid(cfg)
    if pid is None:
        cfg.dnsmasq_pid_file.unlink(missing_ok=True)
        return False
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        handle = None
    if handle is not None:
        try:
            os.kill(pid, signal.SIGTERM)
            if not select.select([handle], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                select.select([handle], [], [], timeout)
        finally:
            os.close(handle)
    cfg.dnsmasq_pid_file.unlink(missing_ok=True)
    return True


def dnsmasq_running(cfg: NetworkConfig) -> bool:
    return _dnsmasq_pid(cfg) is not None
