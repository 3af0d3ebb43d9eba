"""requirements.txt holds what the application needs to run; the test and lint
tools are in requirements-dev.txt, which only make test, test-fast and lint
install (issue 17, point 7)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_TOOLS = {"pytest", "pytest-django", "pandas", "hypothesis", "schemathesis", "playwright", "ruff", "import-linter"}
# The import names of the test tools: the application never imports them.
TEST_MODULES = {"pytest", "pytest_django", "pandas", "hypothesis", "schemathesis", "playwright", "ruff", "importlinter"}


def _packages(name: str) -> dict[str, str]:
    """package -> the whole requirement line, of one file (not its includes)."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-r ")):
            found[re.split(r"[\[=<>~!; ]", line, maxsplit=1)[0].lower()] = line
    return found


def test_the_applications_requirements_hold_no_test_tool():
    assert not TEST_TOOLS & set(_packages("requirements.txt"))


def test_the_dev_requirements_add_every_test_tool_to_the_applications():
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in lines
    assert TEST_TOOLS <= set(_packages("requirements-dev.txt"))


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_every_requirement_is_pinned(name):
    loose = [line for line in _packages(name).values() if not re.search(r"==[0-9][0-9A-Za-z.]*$", line)]
    assert loose == []


def _make_dry_run(goal: str, tmp_path: Path) -> str:
    """What ``make GOAL`` would run on a fresh clone (a virtualenv not made yet)."""
    result = subprocess.run(["make", "-n", goal, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    return result.stdout


def test_make_run_on_a_fresh_clone_installs_no_test_tool(tmp_path):
    commands = _make_dry_run("run", tmp_path)
    assert "-r requirements.txt" in commands
    assert "requirements-dev.txt" not in commands


@pytest.mark.parametrize("goal", ["test", "test-fast", "lint"])
def test_the_test_and_lint_goals_install_the_dev_requirements(goal, tmp_path):
    commands = _make_dry_run(goal, tmp_path)
    assert commands.index("-r requirements.txt") < commands.index("-r requirements-dev.txt")


def test_the_application_imports_no_test_tool():
    imports = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
    used = {}
    for package in ("distributor", "webapp", "sessions"):
        for path in (ROOT / package).rglob("*.py"):
            for module in imports.findall(path.read_text()):
                if module in TEST_MODULES:
                    used.setdefault(module, str(path.relative_to(ROOT)))
    assert used == {}
