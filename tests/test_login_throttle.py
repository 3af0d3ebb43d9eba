"""Login throttling (issue 16, point 3): after 10 failures for a user name or
from an address within 15 minutes, /login/ and the admin's login refuse even
the right password with a page that says why, until the cool-down ends or
``axes_reset`` lifts it; API tokens are unaffected."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from webapp.models import ApiToken

LIMIT = 10


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("admin", password="the-right-password")


def log_in(client: Client, username: str, password: str, url: str = "/login/", address: str = "127.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def locked_out(response) -> bool:
    return response.status_code == 429 and b"Too many failed logins" in response.content


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_ten_wrong_passwords_lock_the_user_name_out_even_for_the_right_one(client, admin, url):
    for attempt in range(LIMIT - 1):
        response = log_in(client, "admin", f"wrong-{attempt}", url)
        assert response.status_code == 200 and not locked_out(response)
    assert locked_out(log_in(client, "admin", "wrong-last", url))
    refused = log_in(client, "admin", "the-right-password", url)
    assert locked_out(refused)
    page = refused.content.decode()
    assert "10 wrong passwords were given for this user name or from this address within 0:15:00" in page
    assert "python manage.py axes_reset" in page
    assert "_auth_user_id" not in client.session


def test_the_lock_is_per_user_name_from_any_address(client, admin):
    for attempt in range(LIMIT):
        log_in(client, "admin", "wrong", address=f"10.0.0.{attempt + 1}")
    assert locked_out(log_in(client, "admin", "the-right-password", address="192.0.2.7"))


def test_the_lock_is_per_address_for_any_user_name(client, admin, alice):
    for attempt in range(LIMIT):
        log_in(client, f"nobody-{attempt}", "wrong", address="198.51.100.9")
    assert locked_out(log_in(client, "alice", "alice-password-1", address="198.51.100.9"))
    response = log_in(client, "alice", "alice-password-1", address="198.51.100.10")
    assert response.status_code == 302  # another address and a user name without failures


def test_fewer_failures_or_older_ones_do_not_lock(client, admin):
    for attempt in range(LIMIT - 1):
        log_in(client, "admin", "wrong")
    assert log_in(client, "admin", "the-right-password").status_code == 302


def test_the_lock_ends_after_the_cool_down(client, admin):
    for attempt in range(LIMIT):
        log_in(client, "admin", "wrong")
    assert locked_out(log_in(client, "admin", "the-right-password"))
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get(username="admin").attempt_time
                                 - timedelta(minutes=16))
    assert log_in(client, "admin", "the-right-password").status_code == 302


def test_axes_reset_lifts_every_lock(client, admin):
    for attempt in range(LIMIT):
        log_in(client, "admin", "wrong")
    call_command("axes_reset")
    assert log_in(client, "admin", "the-right-password").status_code == 302


def test_api_tokens_still_work_while_the_user_name_is_locked(client, admin):
    token = ApiToken.issue(admin, "script")[1]
    for attempt in range(LIMIT):
        log_in(client, "admin", "wrong")
    assert locked_out(log_in(client, "admin", "the-right-password"))
    response = client.get("/api/status", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200


def test_behind_the_proxy_the_client_is_the_address_the_proxy_added(client, admin, settings):
    settings.HTTPS = True
    settings.SECURE_SSL_REDIRECT = False
    for attempt in range(LIMIT):
        client.post("/login/", {"username": f"x{attempt}", "password": "wrong"}, REMOTE_ADDR="127.0.0.1",
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{attempt}, 198.51.100.1")  # the first part is the client's word
    assert AccessAttempt.objects.filter(ip_address="198.51.100.1").count() == LIMIT
    other = client.post("/login/", {"username": "admin", "password": "the-right-password"}, REMOTE_ADDR="127.0.0.1",
                        HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert other.status_code == 302  # another client behind the same proxy is not locked out
