"""A boot image uploaded through one host and used first on another: time and peak memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch db> python bench/upload_image.py [--sizes 50,200]

Issue 18: uploads live in the database (chunks of 1 MiB) and each host
fetches a verified copy into its own data folder on first use. For each size
(MB of random bytes) every step runs in a child process of its own, so its
peak RSS is its own (``os.wait4``):

* ``cp``: a local file copy of the image (``cp``, then ``sync`` of the copy)
  — the yardstick;
* ``upload (alpha)``: the ``image add FILE`` command with host alpha's
  DATA_DIR (``call_command``, as ``manage.py image add`` runs it): one pass,
  the chunks hashed while they stream into the database, committed (the
  commit waits for PostgreSQL's WAL to be on disk);
* ``first use (beta)``: ``UploadedFiles().boot_image(NAME)`` with host beta's
  own DATA_DIR, as a QEMU machine asks before it boots: the chunks streamed
  into beta's cache by one statement, hashed, renamed into place, then
  ``fsync`` of the copy (as ``sync`` of cp's copy);
* ``next use (beta)``: the same in a fresh process: the cached copy hashed again;
* ``upload again``: the same file once more: a content of that size is
  stored, so it is hashed first, found, and nothing is written;
* ``django alone``: ``manage.py shell -c pass``, the process's floor.

"seconds" is the child's wall time, start-up included; "step s" is the step
alone, timed inside the child around the call (Django's start-up varies by
tenths of a second between processes, too much to subtract). Targets: flat
memory (peak RSS the same whatever the size, a few MB above Django's floor)
and the upload and the first use each under 2x the local copy. Without
DATABASE_URL a SQLite file in the bench's folder stands for the shared
database. The image and both data folders are deleted afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


STEP = "step seconds:"


def run(argv: list[str], env: dict) -> tuple[float, float, float | None]:
    """(seconds, peak RSS in MB, the step's own seconds if it printed them) of
    one child process, started with nothing left to write out: the bench runs
    both hosts on one disk, where the database's writes of an upload would
    still be going on during the first use (on a second host they are not)."""
    os.sync()
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed ({status})")
    step = [float(line.removeprefix(STEP)) for line in output.splitlines() if line.startswith(STEP)]
    return seconds, usage.ru_maxrss / 1024, step[0] if step else None


def timed(setup: str, code: str) -> list[str]:
    """``manage.py shell -c``: ``setup`` (imports, the database connection),
    then ``code``, printing the seconds of ``code`` alone."""
    return manage("shell", "-c", f"import time; {setup}; started = time.perf_counter(); {code}; "
                                 f"print({STEP!r}, time.perf_counter() - started)")


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def write_random(path: Path, size_mb: int) -> None:
    with path.open("wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(MB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="image sizes in MB, comma-separated")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    database = os.environ.get("DATABASE_URL") or f"sqlite:///{folder / 'shared.sqlite3'}"
    hosts = {name: {**os.environ, "DATABASE_URL": database, "DISTRIBUTOR_HOST": name,
                    "DATA_DIR": str(folder / name), "IMAGE_MAX_BYTES": str(max(sizes) * MB + MB)}
             for name in ("alpha", "beta")}
    try:
        subprocess.run(manage("migrate", "--verbosity", "0"), cwd=ROOT, env=hosts["alpha"], check=True)
        print(f"database {database.split('@')[-1]}; load average {os.getloadavg()[0]:.2f}")
        print(f"{'MB':>5} {'step':<18} {'seconds':>8} {'step s':>7} {'step x cp':>9} {'peak RSS MB':>12}")
        floor_s, floor_mb, _ = run(manage("shell", "-c", "pass"), hosts["beta"])
        print(f"{'':>5} {'django alone':<18} {floor_s:8.2f} {'':>7} {'':>9} {floor_mb:12.1f}")
        for size in sizes:
            image = folder / f"image-{size}.img"
            write_random(image, size)
            copy = run(["sh", "-c", f"cp {image} {folder / 'copy.img'} && sync {folder / 'copy.img'}"], hosts["alpha"])
            steps = {
                "cp": copy,
                "upload (alpha)": run(timed(*add(image, f"bench-{size}.img")), hosts["alpha"]),
                "first use (beta)": run(timed(*use(f"bench-{size}.img")), hosts["beta"]),
                "next use (beta)": run(timed(*use(f"bench-{size}.img")), hosts["beta"]),
                "upload again": run(timed(*add(image, f"bench-{size}.img")), hosts["alpha"]),
            }
            for step, (seconds, peak, own) in steps.items():
                own = seconds if step == "cp" else own
                print(f"{size:5d} {step:<18} {seconds:8.2f} {own:7.2f} {own / copy[0]:9.2f} {peak:12.1f}")
            (folder / "copy.img").unlink()
            image.unlink()
    finally:
        subprocess.run(manage("shell", "-c", FORGET), cwd=ROOT, env=hosts["alpha"], check=False)
        shutil.rmtree(folder, ignore_errors=True)


# The bench's images and their contents go (a content of the same size left
# in the database would send the next run's upload through the checksum pass).
FORGET = ("from distributor.models import BootImage; "
          "[image.delete() for image in BootImage.objects.filter(name__startswith='bench-')]")


def add(image: Path, name: str) -> tuple[str, str]:
    """``manage.py image add IMAGE --name NAME``, in the process that times it."""
    return (f"from django.core.management import call_command; {CONNECT}",
            f"call_command('image', 'add', {str(image)!r}, '--name', {name!r})")


def use(name: str) -> tuple[str, str]:
    """What a QEMU machine on beta does before it boots the image, then the
    copy on disk (as ``sync`` of cp's copy)."""
    return (f"from distributor.files import UploadedFiles; import os; {CONNECT}",
            f"path = UploadedFiles().boot_image({name!r}); handle = open(path, 'rb'); os.fsync(handle.fileno()); "
            "assert path.stat().st_size")


CONNECT = "from django.db import connection; connection.ensure_connection()"


if __name__ == "__main__":
    main()
