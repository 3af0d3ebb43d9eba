"""Starting a host's clusters: what machines left behind in a crash is
cleaned up by asking every registered kind (distributor.processes)."""
from __future__ import annotations

import logging

from distributor import processes
from sessions.base import HostEnvironment, Session


def test_the_clean_up_asks_every_kind_and_one_failing_stops_no_other(db, monkeypatch, settings, caplog):
    settings.DISTRIBUTOR_HOST = "here"
    asked = []

    class Tidy(Session):
        @classmethod
        def clean_up_host(cls, live_machines, host: HostEnvironment) -> list[str]:
            asked.append(("tidy", list(live_machines), host.name))
            return ["tap7"]

    class Broken(Session):
        @classmethod
        def clean_up_host(cls, live_machines, host: HostEnvironment) -> list[str]:
            asked.append(("broken", list(live_machines), host.name))
            raise OSError("no network here")

    monkeypatch.setattr(processes, "SESSION_KINDS", {"tidy": Tidy, "broken": Broken, "plain": Session})
    with caplog.at_level(logging.INFO, logger="distributor"):
        processes._clean_up_host()
    assert asked == [("broken", [], "here"), ("tidy", [], "here")]
    assert "tidy: deleted what dead machines left: tap7" in caplog.text
