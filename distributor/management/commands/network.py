"""`network up` / `network down` / `network status`: the QEMU pools' bridge,
taps and DHCP (see sessions.qemu_network for the settings it reads)."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from distributor.environment import network_config
from sessions import qemu_network as network


class Command(BaseCommand):
    help = "Bring the QEMU bridge and its DHCP server up or down (needs root)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["up", "down", "status"])
        parser.add_argument("--netns", default=None,
                            help="network namespace to work in (default: DISTRIBUTOR_NETNS; '' = the host's own)")

    def handle(self, *args, action: str, netns: str | None, **options) -> None:
        try:
            cfg = network_config(netns)
            getattr(self, f"_{action}")(cfg)
        except (network.NetworkError, PermissionError) as error:
            raise CommandError(f"network {action}: {error}") from None

    def _where(self, cfg: network.NetworkConfig) -> str:
        return f" in namespace {cfg.netns}" if cfg.netns else ""

    def _up(self, cfg: network.NetworkConfig) -> None:
        network.up(cfg)
        last = network.guest_address(cfg.slots - 1, cfg) if cfg.slots else "none"
        self.stdout.write(f"bridge {cfg.bridge} {cfg.interface}{self._where(cfg)}; dnsmasq serves "
                          f"{cfg.slots} slots {cfg.first_address}..{last}")

    def _down(self, cfg: network.NetworkConfig) -> None:
        removed = network.down(cfg)
        self.stdout.write(f"removed{self._where(cfg)}: {', '.join(removed) or 'nothing'}")

    def _status(self, cfg: network.NetworkConfig) -> None:
        taps = network.list_taps(cfg)
        self.stdout.write(f"bridge {cfg.bridge} {cfg.interface}{self._where(cfg)}; "
                          f"dnsmasq {'running' if network.dnsmasq_running(cfg) else 'stopped'}; "
                          f"taps: {', '.join(taps[slot] for slot in sorted(taps)) or 'none'}")
