"""Content-Security-Policy (issue 16, point 4): every page carries a policy
that allows scripts from static files only and no framing, and no template
holds an inline script, an inline event handler or an htmx filter that would
need eval. tests/test_browser.py drives the pages in chromium and finds no
violation in its console."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def policy_of(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("url", ["/login/", "/", "/submit/", "/api/status", "/admin/"])
def test_every_page_forbids_inline_scripts_eval_and_framing(client, staff, url):
    if url != "/login/":
        client.force_login(staff)
    policy = policy_of(client.get(url))
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["frame-ancestors"] == "'none'"
    assert policy["default-src"] == "'self'" and policy["object-src"] == "'none'"
    assert "unsafe" not in policy["style-src"]


def test_the_lockout_and_error_pages_carry_it_too(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and "frame-ancestors 'none'" in response["Content-Security-Policy"]


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")) + sorted(TEMPLATES.rglob("*.svg")),
                         ids=lambda path: str(path.relative_to(TEMPLATES)))
def test_no_template_holds_inline_script(path):
    text = path.read_text()
    for tag in re.findall(r"<script\b[^>]*>", text):
        assert "src=" in tag, f"an inline script: {tag}"
    assert not re.search(r"\son[a-z]+\s*=", text), "an inline event handler (onclick=, onchange=, …)"
    assert "javascript:" not in text
    assert not re.search(r'hx-trigger="[^"]*\[', text), "an htmx trigger filter: htmx would eval it"
    assert "hx-on" not in text and "js:" not in text


def test_htmx_evaluates_nothing_and_adds_no_style_element():
    base = (TEMPLATES / "base.html").read_text()
    assert '"allowEval": false' in base and '"includeIndicatorStyles": false' in base
