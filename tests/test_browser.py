"""The whole product in a real browser: `manage.py serve` (web server and both
clusters) in a scratch DATA_DIR, driven by Playwright in Debian's chromium.

It logs in, sets the machine count, submits a file with errors and then the
five-task example, watches the job's progress bar reach 100% on the SimSo
target with 2 machines, opens a task-set's Gantt chart, and checks that a user
who is not staff cannot change the machine count. The screenshots it takes
are the README's (docs/screenshots/).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_serve import free_port, wait_until_serving

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
USERS = """
from django.contrib.auth.models import User
User.objects.create_user("sam", password="sam-password-1", is_staff=True)
User.objects.create_user("alice", password="alice-password-1")
"""
BROKEN_FILE = b'{"name": "broken", "tasksets": [{"tasks": [{"pkg": "a-name-far-too-long", "period": -5}, {"pkg": "hey", "colour": "red"}]}]}'


# The dashboard is worth a picture once a machine is busy and the job has a rate.
RUNNING_WITH_A_RATE = """
document.querySelector('#machines .badge.busy') !== null &&
[...document.querySelectorAll('#queue tr[data-job]')].some(row => /\\/(min|h)/.test(row.textContent))
"""


def _longer_example(folder: Path) -> Path:
    """The example with pi's arg1 in 1..2000: 4,000 variants, long enough to watch
    (two machines run the example's variants in a few milliseconds each)."""
    import json

    spec = json.loads((ROOT / "fixtures" / "example5.json").read_text())
    spec["tasksets"][0]["tasks"][1]["config"]["arg1"] = {"range": [1, 2001]}
    path = folder / "example5-4000.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def server(tmp_path):
    """A real `serve` with its own SQLite database, 2 machine workers, users made in code."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; `make test` installs it)")
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATA_DIR=str(tmp_path / "data"), DISTRIBUTOR_MACHINE_WORKERS="2", DISTRIBUTOR_CONTROL_WORKERS="1",
               DISTRIBUTOR_HOST="browser-test")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "setup"], env=env, check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*manage, "shell", "-c", USERS], env=env, check=True, capture_output=True, cwd=ROOT)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([*manage, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, port)
        yield base
    finally:
        process.send_signal(signal.SIGINT)  # serve stops its machines and clusters on Ctrl-C
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        print("the end of serve's log:", (tmp_path / "serve.log").read_text()[-5000:])  # shown on failure


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# What the browser says when the Content-Security-Policy blocks something.
CSP_REPORTS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""


def _log_in(browser, base: str, user: str, password: str):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.console_errors = []
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    page.add_init_script(CSP_REPORTS)
    response = page.goto(f"{base}/")
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, policy
    assert "/login/" in page.url
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def test_a_user_runs_the_example_and_reads_its_schedule(server, browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = _log_in(browser, server, "sam", "sam-password-1")

    # Two machines; the live fragment follows without a reload.
    page.fill("#max-machines", "2")
    page.click("#max-form button[type=submit]")
    page.wait_for_selector("text=Machines: at most 2 of 42.")
    assert page.locator("#machine-count").inner_text().endswith("/ 2")

    # A broken file: every error next to its path, nothing stored.
    page.goto(f"{server}/submit/")
    broken = tmp_path / "broken.json"
    broken.write_bytes(BROKEN_FILE)
    page.set_input_files("#id_file", str(broken))
    page.fill("#id_offset", "-3")
    page.click("button[value=check]")
    errors = page.locator("#file-errors").inner_text()
    assert "tasksets[0].tasks[0].pkg" in errors and "tasksets[0].tasks[1].colour" in errors
    assert "Nothing was stored" in page.content()
    page.screenshot(path=str(SHOTS / "submit-errors.png"), full_page=True)

    # The example: check, then submit, then watch the bar fill.
    page.goto(f"{server}/submit/")
    page.set_input_files("#id_file", str(ROOT / "fixtures" / "example5.json"))
    page.click("button[value=check]")
    assert "8 variants" in page.locator("#check-result").inner_text()
    page.click("button[value=submit]")
    page.wait_for_url("**/jobs/*/")
    job_url = page.url
    _wait_in(page, "document.querySelector('#job-percent').textContent.trim() === '100.0%'", 180)
    assert page.locator("#job-state").inner_text() == "finished"
    assert page.locator(".bar.big").get_attribute("aria-valuenow") == "100.0"
    page.reload()
    page.screenshot(path=str(SHOTS / "job.png"), full_page=True)

    # A task-set's Gantt chart: a row per task, a bar per job, a legend.
    page.click("#taskset-table tbody tr:first-child td:nth-child(2) a")
    page.wait_for_selector("#gantt svg")
    assert page.locator("#gantt .task-row").count() == 5
    assert page.locator("#gantt .job").count() == 5 + 2 + 4 + 2 + 5  # numberofjobs of the five tasks
    assert page.locator("#gantt .legend-entry").count() >= 2
    page.click("text=first second")
    page.wait_for_selector("#gantt svg")
    assert 0 < page.locator("#gantt .job").count() < 18
    page.screenshot(path=str(SHOTS / "taskset.png"), full_page=True)

    # The dashboard while a longer job runs; then change the machine count again.
    page.goto(f"{server}/submit/")
    page.set_input_files("#id_file", str(_longer_example(tmp_path)))
    page.fill("#id_name", "example5, 4000 variants")
    page.click("button[value=submit]")
    page.goto(f"{server}/")
    _wait_in(page, RUNNING_WITH_A_RATE, 60)
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
    page.fill("#max-machines", "3")
    page.click("#max-form button[type=submit]")
    page.wait_for_selector("text=Machines: at most 3 of 42.")
    _wait_in(page, "document.querySelector('#machine-count').textContent.trim().endsWith('/ 3')", 30)
    page.goto(job_url)

    # The machines filter submits itself from app.js (no inline handler).
    page.goto(f"{server}/machines/")
    page.select_option("select[name=state]", "stopped")
    page.wait_for_url("**/machines/?state=stopped")
    _assert_no_csp_violation(page)
    page.close()


def _wait_in(page, expression: str, seconds: float) -> None:
    """Poll an expression from here: Playwright's wait_for_function compiles
    it inside the page, which the Content-Security-Policy (no eval) forbids."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {seconds} s: {expression}"
        time.sleep(0.2)


def _assert_no_csp_violation(page) -> None:
    """Nothing was blocked by the Content-Security-Policy on the last page, and
    the console reported no violation on any page of the visit."""
    assert page.evaluate("window.__cspViolations") == []
    blocked = [text for text in page.console_errors if "Content Security Policy" in text]
    assert blocked == [], blocked


def test_a_user_who_is_not_staff_cannot_change_machines(server, browser):
    page = _log_in(browser, server, "alice", "alice-password-1")
    assert page.locator("#max-machines").count() == 0
    assert page.locator("text=Kill all").count() == 0
    assert "Only staff can change the machine count" in page.content()
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(f"{server}/distributor/max", form={"max_machines": "7"},
                                 headers={"X-CSRFToken": token, "Referer": f"{server}/"})
    assert response.status == 403
    api = page.request.post(f"{server}/api/distributor", data={"max_machines": 7},
                            headers={"X-CSRFToken": token, "Referer": f"{server}/"})
    assert api.status == 403
    page.reload()
    assert "at most 1 of 42" in page.content()
    _assert_no_csp_violation(page)


# A sweep of utilisation (pi's execution time grows with arg1) on SimSo: 30
# task-sets from U ≈ 0.3 to ≈ 1.7, some schedulable, some not.
SWEEP = {"name": "utilisation sweep", "tasksets": [{"tasks": [
    {"pkg": "pi", "config": {"arg1": {"range": [0, 120, 4]}}, "period": 40, "priority": 1, "numberofjobs": 3},
    {"pkg": "tumatmul", "config": {"arg1": 10}, "period": 100, "priority": 2, "numberofjobs": 2},
    {"pkg": "hey", "config": {"arg1": 1}, "period": 50, "priority": 3, "numberofjobs": 2},
]}]}


def test_the_job_page_shows_its_results_as_plots_and_an_agreement_matrix(server, browser, tmp_path):
    import json

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = _log_in(browser, server, "alice", "alice-password-1")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(SWEEP))
    page.goto(f"{server}/submit/")
    page.set_input_files("#id_file", str(sweep))
    page.click("button[value=submit]")
    page.wait_for_url("**/jobs/*/")
    _wait_in(page, "document.querySelector('#job-percent').textContent.trim() === '100.0%'", 240)
    page.reload()
    cover = page.locator("#results-cover").inner_text()
    assert "These figures cover 30 finished task-sets of 30 started" in cover, cover
    assert page.locator("#agreement table.matrix").count() == 6
    # Each plot is an SVG file of its own that the browser drew: no script involved.
    plots = page.locator("#results .plots img")
    assert plots.count() == 3
    _wait_in(page, "[...document.querySelectorAll('#results .plots img')].every(i => i.complete && i.naturalWidth === 640)", 30)
    page.locator("#results").screenshot(path=str(SHOTS / "job-results.png"))
    svg = page.request.get(server + plots.first.get_attribute("src"))
    assert svg.ok and svg.headers["content-type"] == "image/svg+xml" and 'data-name="measured"' in svg.text()
    # A number of the matrix opens the list of exactly the task-sets it counts.
    cell = page.locator('table.matrix[data-test="verdict"] tr[data-outcome="unschedulable"] td[data-verdict="no"] a.count')
    count = int(cell.inner_text())
    assert count > 0
    cell.click()
    page.wait_for_url("**verdict=no**")
    assert page.locator("#taskset-table tbody tr").count() == count
    assert page.locator("select[name=verdict]").input_value() == "no"
    _assert_no_csp_violation(page)
    page.close()


def test_staff_see_their_actions_on_the_dashboard_and_the_audit_page(server, browser):
    page = _log_in(browser, server, "sam", "sam-password-1")
    page.fill("#max-machines", "3")
    page.click("#max-form button[type=submit]")
    page.wait_for_url(f"{server}/")
    recent = page.locator("#recent-actions")
    recent.wait_for(timeout=10_000)
    assert "max" in recent.inner_text() and "sam" in recent.inner_text() and "[1, 3]" in recent.inner_text()
    page.click("nav >> text=Audit")
    page.wait_for_url(f"{server}/audit/")
    row = page.locator("#audit tbody tr").first
    assert "sam" in row.inner_text() and "max machines" in row.inner_text()
    page.select_option("select[name=action]", "max")
    page.wait_for_url("**/audit/?action=max**")
    assert page.locator("#audit tbody tr").count() == 1
    _assert_no_csp_violation(page)
