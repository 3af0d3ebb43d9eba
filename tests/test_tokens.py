"""API tokens from the command line (`token create|list|revoke`), their
expiry and their last use (issue 17, point 1)."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from webapp.models import ApiToken


def token(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def status(client, clear: str) -> int:
    return client.get("/api/status", headers={"Authorization": f"Bearer {clear}"}).status_code


def test_create_prints_the_token_alone_once_and_it_authenticates(client, alice):
    out, err = token("create", "alice", "--name", "campaign script")
    clear = out.strip()
    assert clear.startswith("dst_") and out.count("\n") == 1
    record = ApiToken.objects.get()
    assert (record.user, record.name, record.expires_at) == (alice, "campaign script", None)
    assert clear not in record.token_hash and f"token {record.pk} for alice" in err and "until revoked" in err
    assert status(client, clear) == 200


def test_a_token_with_an_expiry_works_until_then_and_gets_401_after(client, alice):
    clear = token("create", "alice", "--name", "nightly", "--expires", "2")[0].strip()
    record = ApiToken.objects.get()
    assert timedelta(days=2) - timedelta(minutes=1) < record.expires_at - timezone.now() <= timedelta(days=2)
    assert status(client, clear) == 200
    ApiToken.objects.filter(pk=record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/jobs", headers={"Authorization": f"Bearer {clear}"})
    assert response.status_code == 401 and "expired" in response.json()["errors"]["authorization"]
    assert ApiToken.authenticate(clear) is None


def test_an_expired_token_is_not_stamped_as_used(alice):
    record, clear = ApiToken.issue(alice, "old", timedelta(days=-1))
    assert record.is_expired
    assert ApiToken.authenticate(clear) is None
    record.refresh_from_db()
    assert record.last_used_at is None


def test_revoke_deletes_the_token_and_requests_carrying_it_get_401(client, alice):
    record, clear = ApiToken.issue(alice, "script")
    assert status(client, clear) == 200
    out, _ = token("revoke", str(record.pk))
    assert f"revoked token {record.pk}" in out and "alice" in out
    assert not ApiToken.objects.exists()
    assert status(client, clear) == 401


def test_list_shows_every_column_and_filters_by_user(client, alice, staff):
    used, clear = ApiToken.issue(alice, "used one", timedelta(days=30))
    ApiToken.issue(staff, "ops")
    expired, _ = ApiToken.issue(alice, "stale", timedelta(days=-1))
    assert status(client, clear) == 200  # stamps last use
    out, _ = token("list")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "USER", "NAME", "PREFIX", "CREATED", "EXPIRES", "LAST", "USED"]
    assert len(rows) == 3
    line = next(row for row in rows if "used one" in row)
    assert line.startswith(f"{used.pk} ") and f"{used.prefix}…" in line
    assert timezone.localtime(used.expires_at).strftime("%Y-%m-%d") in line and "never" not in line
    assert "expired" in next(row for row in rows if "stale" in row)
    ops_line = next(row for row in rows if "ops" in row)
    assert ops_line.count("never") == 2  # no expiry, never used
    mine = token("list", "alice")[0].splitlines()[1:]
    assert len(mine) == 2 and all("alice" in row for row in mine)


def test_list_says_so_when_there_is_none(db):
    assert "no tokens" in token("list")[0]


@pytest.mark.parametrize("args, message", [
    (["create", "nobody", "--name", "x"], "no user 'nobody'"),
    (["create", "alice", "--name", " "], "--name"),
    (["create", "alice", "--name", "x" * 101], "--name"),
    (["create", "alice", "--name", "x", "--expires", "0"], "--expires"),
    (["create", "alice", "--name", "x", "--expires", "4000"], "--expires"),
    (["revoke", "99"], "no token 99"),
    (["list", "nobody"], "no user 'nobody'"),
])
def test_bad_arguments_are_refused_naming_them(alice, args, message):
    with pytest.raises(CommandError, match=message):
        token(*args)
    assert not ApiToken.objects.exists()


def test_an_inactive_user_gets_no_token(alice):
    alice.is_active = False
    alice.save()
    with pytest.raises(CommandError, match="inactive"):
        token("create", "alice", "--name", "x")


def test_the_profile_page_shows_the_expiry(client, alice):
    ApiToken.issue(alice, "soon", timedelta(days=3))
    ApiToken.issue(alice, "gone", timedelta(days=-3))
    client.force_login(alice)
    page = client.get("/profile/").content.decode()
    assert "Expires" in page and "<strong>expired</strong>" in page and "in 2\xa0days" in page
