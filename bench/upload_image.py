"""A boot image uploaded through one host and used first on another: time and peak memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<scratch db> python bench/upload_image.py [--sizes 50,200]

Issue 18: uploads live in the database (chunks of 1 MiB) and each host
fetches a verified copy into its own data folder on first use. For each size
(MB of random bytes) every step runs in a child process of its own, so its
peak RSS is its own (``os.wait4``):

* ``cp``: a local file copy of the image (``cp``, then ``sync`` of the copy)
  — the yardstick;
* ``upload (alpha)``: ``manage.py image add FILE`` with host alpha's
  DATA_DIR: checksum pass, then the chunks into the database;
* ``first use (beta)``: ``UploadedFiles().boot_image(NAME)`` with host beta's
  own DATA_DIR, as a QEMU machine asks before it boots: the chunks streamed
  into beta's cache, hashed, renamed into place;
* ``next use (beta)``: the same in a fresh process: the cached copy hashed again;
* ``django alone``: ``manage.py shell -c pass``, the process's floor; "net"
  is a step's seconds less this start-up.

Targets: flat memory (peak RSS the same whatever the size, a few MB above
Django's floor) and the upload and the first use each under 2x the local copy.
Without DATABASE_URL a SQLite file in the bench's folder stands for the shared
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


def run(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed ({status})")
    return seconds, usage.ru_maxrss / 1024


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
        print(f"{'MB':>5} {'step':<18} {'seconds':>8} {'x cp':>6} {'net s':>6} {'net x cp':>8} {'peak RSS MB':>12}")
        floor_s, floor_mb = run(manage("shell", "-c", "pass"), hosts["beta"])
        print(f"{'':>5} {'django alone':<18} {floor_s:8.2f} {'':>6} {'':>6} {'':>8} {floor_mb:12.1f}")
        for size in sizes:
            image = folder / f"image-{size}.img"
            write_random(image, size)
            copy = run(["sh", "-c", f"cp {image} {folder / 'copy.img'} && sync {folder / 'copy.img'}"], hosts["alpha"])
            steps = {
                "cp": copy,
                "upload (alpha)": run(manage("image", "add", str(image), "--name", f"bench-{size}.img"), hosts["alpha"]),
                "first use (beta)": run(manage("shell", "-c", use(f"bench-{size}.img")), hosts["beta"]),
                "next use (beta)": run(manage("shell", "-c", use(f"bench-{size}.img")), hosts["beta"]),
            }
            for step, (seconds, peak) in steps.items():
                net = seconds if step == "cp" else max(seconds - floor_s, 0.0)
                print(f"{size:5d} {step:<18} {seconds:8.2f} {seconds / copy[0]:6.2f} {net:6.2f} {net / copy[0]:8.2f} "
                      f"{peak:12.1f}")
            (folder / "copy.img").unlink()
            image.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def use(name: str) -> str:
    """What a QEMU machine on beta does before it boots the image."""
    return ("from distributor.files import UploadedFiles; import os; "
            f"path = UploadedFiles().boot_image({name!r}); os.sync(); assert path and path.stat().st_size")


if __name__ == "__main__":
    main()
