"""The layers. sessions/ is the bottom layer: it imports nothing of
distributor/, webapp/ or Django, so a driver can be read, imported and tested
on its own. And the house: a Machine's state and raw SQL stay in
distributor/models/ (the import contracts themselves are lint-imports', in
pyproject.toml)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
IMPORT_EVERY_KIND = (
    "import sessions, sessions.genode, sessions.qemu, sessions.board, sessions.simso, sessions.stdio; import sys; "
    "assert not [m for m in sys.modules if m.startswith(('distributor', 'webapp', 'django'))], "
    "sorted(m for m in sys.modules if m.startswith(('distributor', 'webapp', 'django')))"
)


def test_sessions_import_without_django_settings_or_models():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_KIND], cwd=CHECKOUT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- the house: writes and raw SQL stay in distributor/models/ ------------------
#
# Each model owns the writes to its rows (issue 13): a Machine's state changes
# only through Machine's transition methods, and raw SQL lives only in
# distributor/models/, next to the model whose rows it writes. This reads every
# .py file of distributor/, webapp/ and sessions/ (not migrations) outside
# distributor/models/ as a syntax tree — so comments and docstrings do not
# count, and a call spread over several lines does — and looks for:
#
# (a) a Machine's state assigned: ``<…machine…>.state = …`` (or setattr), a
#     ``state=`` keyword given ``Machine.State.…`` or sent to a Machine query
#     by anything but a read (filter, exclude, get, Q, When);
# (b) raw SQL on the database: a call named ``execute``, ``executemany``,
#     ``executescript``, ``fetch``, ``raw``, ``extra``, ``RawSQL``, ``cursor``,
#     ``chunked_cursor``, ``copy_expert``, ``copy_from``, ``copy_to``, ``copy``
#     with SQL text, the raw DB-API connection (``connection.connection``), or
#     the hot-path statements of distributor/models/rows.py (``insert_rows``,
#     ``execute``, ``fetch``, ``prepared_cursor``, …) used from outside.

SOURCE_PACKAGES = ("distributor", "webapp", "sessions")
MODELS = "distributor/models/"
READS = {"filter", "exclude", "get", "Q", "When"}
RAW_CALLS = {"execute", "executemany", "executescript", "fetch", "raw", "extra", "RawSQL", "cursor",
             "chunked_cursor", "copy_expert", "copy_from", "copy_to"}
ROWS_HELPERS = {"execute", "fetch", "insert_rows", "prepared_cursor", "insert_head", "unnest_select", "column_arrays"}

# Raw statements allowed outside distributor/models/, as (file, function, what
# is called): all in the exports, none writes the distributor's tables.
READ_ONLY_EXCEPTIONS = {
    # taskjobs-csv without COPY: the SELECT the ORM built (taskjob_rows(…)
    # .query.sql_with_params()), read through a server-side cursor. Reads only.
    ("distributor/exports.py", "_cursor_rows", "connection.chunked_cursor"),
    ("distributor/exports.py", "_cursor_rows", "cursor.execute"),
    # taskjobs-csv and taskjobs-parquet on PostgreSQL: the same ORM-built SELECT inside COPY (…) TO
    # STDOUT, which the ORM cannot say; the server formats the CSV
    # (bench/export_rate.py). Reads only.
    ("distributor/exports.py", "_copy_bytes", "connection.connection"),
    ("distributor/exports.py", "_copy_bytes", "connection.connection.cursor"),
    ("distributor/exports.py", "_copy_bytes", "cursor.copy"),
    # The SQLite export: statements on the export file's own connection
    # (sqlite3.connect(path) of the file being written), not on the
    # distributor's database.
    ("distributor/exports.py", "_fill_sqlite", "db.execute"),
    ("distributor/exports.py", "_insert", "db.executemany"),
    ("distributor/exports.py", "_copy_jobs_targets_machines", "db.execute"),
    ("distributor/exports.py", "_build_seed_tables", "db.executescript"),
    ("distributor/exports.py", "_create_flat_view", "db.execute"),
}


def _mentions_machine(node: ast.AST) -> bool:
    return "machine" in ast.unparse(node).lower()


def _is_sql_text(node: ast.AST) -> bool:
    return isinstance(node, (ast.Constant, ast.JoinedStr)) and any(
        word in ast.unparse(node).upper() for word in ("SELECT", "INSERT", "UPDATE", "DELETE", "COPY"))


def house_violations(path: str, source: str) -> list[tuple[str, str, int, str]]:
    """(path, enclosing function, line, what) for every write of a Machine's
    state and every raw statement in ``source``."""
    found = []
    functions: dict[ast.AST, str] = {}

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        functions[node] = function
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    tree = ast.parse(source, path)
    visit(tree, "")
    for node, function in functions.items():
        def flag(what: str, node: ast.AST = node, function: str = function) -> None:
            found.append((path, function, node.lineno, what))

        # (a) a Machine's state
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Attribute) and target.attr == "state" and _mentions_machine(target.value):
                    flag(f"{ast.unparse(target)} assigned")
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            if (name == "setattr" and len(node.args) >= 2 and _mentions_machine(node.args[0])
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value == "state"):
                flag("setattr(…, 'state', …)")
            for keyword in node.keywords:
                if keyword.arg == "state" and name not in READS and (
                        "Machine.State" in ast.unparse(keyword.value)
                        or (receiver is not None and _mentions_machine(receiver))):
                    flag(f"{ast.unparse(node.func)}(state={ast.unparse(keyword.value)})")
            # (b) raw SQL
            if name in RAW_CALLS or (name == "copy" and node.args and _is_sql_text(node.args[0])) or (
                    name in ROWS_HELPERS and isinstance(node.func, ast.Name)):
                flag(ast.unparse(node.func))
        if (isinstance(node, ast.Attribute) and node.attr == "connection"
                and ast.unparse(node.value).split("[")[0] in ("connection", "connections", "django.db.connection")):
            flag(ast.unparse(node))
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models.rows"):
            for alias in node.names:
                if alias.name in ROWS_HELPERS:
                    flag(f"import of rows.{alias.name}")
    return found


def house_files():
    for package in SOURCE_PACKAGES:
        for file in sorted((CHECKOUT / package).rglob("*.py")):
            path = file.relative_to(CHECKOUT).as_posix()
            if "/migrations/" not in path and not path.startswith(MODELS):
                yield path, file.read_text()


def test_no_file_outside_the_models_writes_a_machines_state_or_runs_raw_sql():
    found = [violation for path, source in house_files() for violation in house_violations(path, source)]
    unexpected = [f"{path}:{line} in {function or 'the module'}: {what}"
                  for path, function, line, what in found if (path, function, what) not in READ_ONLY_EXCEPTIONS]
    assert unexpected == [], "\n".join(unexpected)
    unused = READ_ONLY_EXCEPTIONS - {(path, function, what) for path, function, _, what in found}
    assert not unused, f"exceptions that no longer match anything (remove them): {sorted(unused)}"


def test_the_house_rule_sees_each_kind_of_violation():
    """The rule is not blind: every pattern it names is found in a sample."""
    sample = '''
from django.db import connection
from distributor.models.rows import insert_rows
def drain(machine, job):
    machine.state = Machine.State.DRAINING
    self.machine.state += ""
    setattr(machine, "state", "dead")
    Machine.objects.filter(pk=machine.pk).update(state=new_state)
    Machine.objects.create(slot=1, state=Machine.State.IDLE)
    Machine.objects.filter(state=Machine.State.IDLE).count()  # a read: not flagged
    job.state = "running"  # not a machine: not flagged here
    with connection.cursor() as cursor:
        cursor.execute("UPDATE distributor_machine SET state = 'dead'")
    connection.connection.cursor().copy("COPY distributor_job TO STDOUT")
    Job.objects.raw("SELECT * FROM distributor_job")
    fetch("SELECT 1", [])
    insert_rows(Event, (), [])
    "execute(this is a string, not a call)"
'''
    found = [what for _, _, _, what in house_violations("distributor/sample.py", sample)]
    assert found == [
        "import of rows.insert_rows", "machine.state assigned", "self.machine.state assigned",
        "setattr(…, 'state', …)", "Machine.objects.filter(pk=machine.pk).update(state=new_state)",
        "Machine.objects.create(state=Machine.State.IDLE)", "connection.cursor", "cursor.execute",
        "connection.connection.cursor().copy", "connection.connection.cursor", "connection.connection",
        "Job.objects.raw", "fetch", "insert_rows"], found
