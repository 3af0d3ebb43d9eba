"""Schemathesis fuzzes every operation of the API's own OpenAPI schema: no
input, however odd, may make the server fail (5xx)."""
from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from bench.web_pages import build
from webapp.models import ApiToken


@pytest.fixture
def token(staff):
    # Staff reach every operation, including the distributor's controls.
    build(5, 1, owner=staff)
    return ApiToken.issue(staff, "fuzz")[1]


@pytest.fixture
def api_schema(token):
    # Requests run inside the test's transaction: like Django's test client,
    # keep the WSGI handler from closing the connection after each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application(),
                                             headers={"Authorization": f"Bearer {token}"})
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])
