"""Shared fixtures: named users, the default target, small task-set files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

import tests.fake_sessions  # noqa: F401 - the "scripted" kind, also loaded by test clusters


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A test database of this run's own: two runs on one checkout (two
    terminals, an editor's test runner) would otherwise drop each other's.
    Clusters started by the tests are given the name (tests/cluster.py)."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        test = database.setdefault("TEST", {})
        name = test.get("NAME") or f"test_{database['NAME']}"
        if database["ENGINE"].endswith("sqlite3"):
            path = Path(name)
            test["NAME"] = str(path.with_name(f"{path.stem}_{os.getpid()}{path.suffix}"))
        else:
            test["NAME"] = f"{name}_{os.getpid()}"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Named users are made in nearly every web test; a real hasher is slow."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("sam", password="sam-password-1", is_staff=True)


@pytest.fixture
def token(alice):
    """An API token of alice's (the plain text, shown once)."""
    from webapp.models import ApiToken

    return ApiToken.issue(alice, "script")[1]


@pytest.fixture
def staff_token(staff):
    from webapp.models import ApiToken

    return ApiToken.issue(staff, "ops")[1]


@pytest.fixture
def stdio_target(db):
    from distributor.models import Target

    return Target.objects.create(name="dry", kind="stdio", settings={"print": False})


@pytest.fixture
def scripted(db):
    """The scripted target of tests/fake_sessions.py, answering at once."""
    from distributor.models import Target

    return Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": 0})


@pytest.fixture
def no_broker():
    """Launch messages are recorded instead of queued, for tests that run
    machines themselves (tests/inprocess.py), on this host, which beats as a
    machines cluster would. Their modules ask for it with
    ``pytest.mark.usefixtures("no_broker")``."""
    from distributor.hosts import beat

    beat()
    with mock.patch("distributor.reconciler.async_task") as sent:
        yield sent


def taskset_file(tasks: list[dict] | None = None, **top) -> bytes:
    """A JSON task-set file with one task-set (default: one 'hey' task)."""
    tasks = tasks or [{"pkg": "hey", "period": 10, "numberofjobs": 2}]
    return json.dumps({"name": "t", "tasksets": [{"tasks": tasks}], **top}).encode()
