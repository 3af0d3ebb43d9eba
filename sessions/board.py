"""Power-switched boards running the Genode task loader (the seeds' PandaSession).

A board cannot be killed like a QEMU guest; the only reliable reset is its
power. The seeds switched PoE ports with scripts and then slept a fixed time;
here the configured commands run directly (shlex-split, no shell, so an
address can never inject a command) and the session waits on the network
until the board answers AVAILABLE, up to ``startup_timeout``.

Command templates may use {machine_id}, {slot}, {address} (host:port),
{host} and {port}, e.g. ``poe-switch --port {slot} on``.
"""
from __future__ import annotations

import shlex
import string
import subprocess

from sessions import register
from sessions.base import HostFault, TargetFailure, boolean_setting, cannot_run, seconds_setting
from sessions.genode import GenodeSession

PLACEHOLDERS = ("machine_id", "slot", "address", "host", "port")
OUTPUT_LOG_CHARS = 2000


def _command(value) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a command line, e.g. 'poe-switch --port {slot} on'"
    try:
        words = shlex.split(value)
        for word in words:
            for _, field, _, _ in string.Formatter().parse(word):
                if field is not None and field not in PLACEHOLDERS:
                    return f"unknown placeholder {{{field}}}; known: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    except ValueError as error:
        return f"cannot be split into words: {error}"
    return None


@register
class BoardSession(GenodeSession):
    kind = "board"
    default_settings = {
        **GenodeSession.default_settings,
        "power_on": "",
        "power_off": "",
        "power_timeout": 60.0,  # one power command may take this long
        "cold_start": True,  # power off before powering on: a board left on may be hung
    }
    setting_rules = {
        **GenodeSession.setting_rules,
        "power_on": _command,
        "power_off": _command,
        "power_timeout": seconds_setting(0.1, 3600),
        "cold_start": boolean_setting,
    }

    @classmethod
    def check_settings(cls, settings: dict, addresses: list[str]) -> dict[str, str]:
        errors = super().check_settings(settings, addresses)
        for name in ("power_on", "power_off"):
            if not settings.get(name) and f"settings.{name}" not in errors:
                errors[f"settings.{name}"] = "is required for a board (a command such as 'poe-switch --port {slot} on')"
        return errors

    def start_host(self) -> None:
        """Power the board on (after a power-off when ``cold_start``) and wait
        until its loader answers; a fresh boot has no binaries."""
        self.close()
        self.sent_binaries.clear()
        if self.settings["cold_start"]:
            self.power("power_off")
        self.power("power_on")
        self.wait_until_available(self.settings["startup_timeout"], after=" after power-on")

    def stop_host(self) -> None:
        """Power off; never raises (it runs on every exit path)."""
        self.close()
        try:
            self.power("power_off")
        except (TargetFailure, HostFault) as error:
            self.log.error("board %s: %s", self.info.address, error)

    def reboot(self) -> None:
        """Off, then on, then wait for the loader: the only reset a hung board takes."""
        self.close()
        self.sent_binaries.clear()
        self.power("power_off")
        self.power("power_on")
        self.wait_until_available(self.settings["startup_timeout"], after=" after power-on")

    def power(self, which: str) -> None:
        """Run the ``power_on`` or ``power_off`` command; TargetFailure if it
        fails, HostFault if this host cannot run it at all (not installed, not
        executable): no board of the pool could be switched from here, so
        its slots are not to blame."""
        argv = self.command(which)
        self.log.info("board %s: %s: %s", self.info.address, which, shlex.join(argv))
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    errors="replace", timeout=self.settings["power_timeout"], check=False)
        except (FileNotFoundError, PermissionError) as error:
            raise HostFault(f"settings.{which}: command {argv[0]!r} {cannot_run(error)} on host "
                            f"{self.info.host.name or 'this host'} (board {self.info.address})") from None
        except subprocess.TimeoutExpired:
            raise TargetFailure(
                f"board {self.info.address}: {which} command did not finish within {self.settings['power_timeout']:g} s"
            ) from None
        output = (result.stdout + result.stderr).strip()
        if output:
            self.log.info("board %s: %s output: %s", self.info.address, which, output[-OUTPUT_LOG_CHARS:])
        if result.returncode != 0:
            raise TargetFailure(
                f"board {self.info.address}: {which} command exited with status {result.returncode}: {output[-300:]}"
            )

    def command(self, which: str) -> list[str]:
        """The command's words with the placeholders filled in (each word
        separately, so a value with spaces stays one argument)."""
        template = self.settings[which]
        if not template:
            raise TargetFailure(f"board {self.info.address}: setting {which} is empty")
        host, port = self.endpoint
        values = {"machine_id": self.info.machine_id, "slot": self.info.slot, "address": self.info.address,
                  "host": host, "port": port}
        return [word.format(**values) for word in shlex.split(template)]
