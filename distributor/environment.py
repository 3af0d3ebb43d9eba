"""This host as sessions see it, built from the Django settings.

Sessions know nothing of Django (``sessions/`` is the bottom layer): whatever
a kind needs to know of its host (its name, DATA_DIR, the QEMU network's
DISTRIBUTOR_* settings) reaches it in a ``sessions.base.HostEnvironment``
built here, at call time, so that a test that changes a setting is heard.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

from sessions import qemu_network
from sessions.base import HostEnvironment


def host_environment() -> HostEnvironment:
    return HostEnvironment(
        name=settings.DISTRIBUTOR_HOST,
        data_dir=Path(settings.DATA_DIR),
        settings={name: getattr(settings, name) for name in dir(settings) if name.startswith("DISTRIBUTOR_")},
    )


def network_config(netns: str | None = None) -> qemu_network.NetworkConfig:
    """The QEMU pools' network on this host; ``netns`` overrides DISTRIBUTOR_NETNS."""
    return qemu_network.config(host_environment(), netns)
