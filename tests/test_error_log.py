"""Server errors in the log (issue 16, point 5): with DEBUG off, a 500 leaves
its traceback in DATA_DIR/logs/distributor.log, and is mailed to ADMINS when
they are set."""
from __future__ import annotations

import uuid

import pytest
from django.core import mail


@pytest.fixture
def failing_page(client, alice, settings, monkeypatch):
    settings.DEBUG = False
    marker = f"boom-{uuid.uuid4().hex}"

    def fail():
        raise RuntimeError(marker)

    monkeypatch.setattr("webapp.views.dashboard.dashboard_context", fail)
    client.raise_request_exception = False
    client.force_login(alice)
    return marker


def test_a_server_error_goes_to_the_log_with_its_traceback(client, failing_page, settings):
    response = client.get("/")
    assert response.status_code == 500
    log = (settings.LOG_DIR / "distributor.log").read_text()
    entry = log[log.rfind("\n", 0, log.rindex("Internal Server Error: /")) + 1:]
    assert " ERROR " in entry.splitlines()[0] and "django.request" in entry.splitlines()[0]
    assert "Traceback (most recent call last)" in entry
    assert f"RuntimeError: {failing_page}" in entry


def test_a_client_error_is_not_logged_as_one(client, alice, settings):
    client.force_login(alice)
    marker = f"/jobs/{uuid.uuid4().int % 10**9}/"
    assert client.get(marker).status_code == 404
    assert marker not in (settings.LOG_DIR / "distributor.log").read_text()


def test_admins_get_the_error_by_mail_when_set(client, failing_page, settings):
    settings.ADMINS = [("Ops", "ops@example.org")]
    assert client.get("/").status_code == 500
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.org"]
    assert "Internal Server Error: /" in mail.outbox[0].subject and failing_page in mail.outbox[0].body


def test_nothing_is_mailed_without_admins(client, failing_page, settings):
    settings.ADMINS = []
    assert client.get("/").status_code == 500
    assert mail.outbox == []
