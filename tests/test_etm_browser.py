"""Execution-time models in a real browser (issue 14): `manage.py serve` and
Chromium, as tests/test_browser.py runs them. Staff calibrate the SimSo
target from its page; when the job ends, its model's page shows the version
calibrated there with a plot per package (docs/screenshots/etm.png), and the
job's page offers that model and relabels with it."""
from __future__ import annotations

import time

import pytest

from tests.test_browser import SHOTS, _assert_no_csp_violation, _log_in, _wait_in, browser, server  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_staff_calibrate_a_target_see_the_model_and_relabel_a_job(server, browser):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = _log_in(browser, server, "sam", "sam-password-1")
    page.on("dialog", lambda dialog: dialog.accept())  # the Relabel button asks first

    page.goto(f"{server}/targets/")
    page.click("#targets-table tr:has-text('simso') a:has-text('edit')")
    page.fill("#cal-pkg", "pi,idle")
    page.fill("#cal-args", "1:6")
    page.fill("#cal-jobs", "3")
    page.fill("#cal-name", "simso-measured")
    page.click("#calibrate button")
    page.wait_for_url("**/jobs/*/")
    job_url = page.url
    assert "become the next version of simso-measured" in page.content()

    # The fit is a reconciler step once the job has ended: the model appears.
    deadline = time.monotonic() + 120
    while page.goto(f"{server}/etm/simso-measured/").status != 200:
        assert time.monotonic() < deadline, "the calibration was not fitted"
        time.sleep(1)
    assert "calibrated on" in page.locator("#etm-provenance").inner_text()
    assert page.locator("#etm-packages .panel").count() == 2
    _wait_in(page, "[...document.querySelectorAll('#etm-packages img')].every(i => i.complete && i.naturalWidth > 0)",
             20)
    assert page.locator("#pkg-pi tbody tr").count() == 6  # arg1 1..6, each measured
    _assert_no_csp_violation(page)
    page.screenshot(path=str(SHOTS / "etm.png"), full_page=True)

    # The calibration job's own labels used the target's model; relabel with the new one.
    page.goto(job_url)
    labels = page.locator("#job-labels").inner_text()
    assert "genode-defaults v1" in labels and "not calibrated on simso" in labels
    page.click("#job-labels button:has-text('Relabel with simso-measured v1')")
    page.wait_for_selector("text=task-sets with simso-measured v1")
    labels = page.locator("#job-labels").inner_text()
    assert "simso-measured v1" in labels and "(calibrated on simso, 12 task-sets)" in labels
    _assert_no_csp_violation(page)
