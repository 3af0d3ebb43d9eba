"""Consoles rotate by size: name.log, then name.log.1 … .3, the oldest dropped."""
from __future__ import annotations

import threading

import pexpect

from sessions.console import RotatingConsole
from sessions.qemu import ConsoleReader, _open_console


def test_a_console_rotates_past_its_size_and_keeps_three_older_files(tmp_path):
    path = tmp_path / "pool-0.log"
    console = RotatingConsole(path, max_bytes=100, backups=3)
    for number in range(10):
        console.write(f"{number}".encode() * 60)  # 60 bytes: each write past the first starts a file
    console.close()
    assert path.read_bytes() == b"9" * 60
    assert [path.with_name(f"pool-0.log.{n}").read_bytes() for n in (1, 2, 3)] == [b"8" * 60, b"7" * 60, b"6" * 60]
    assert not path.with_name("pool-0.log.4").exists()


def test_a_console_appends_to_what_an_earlier_boot_wrote(tmp_path):
    path = tmp_path / "pool-0.log"
    path.write_bytes(b"x" * 90)
    console = RotatingConsole(path, max_bytes=100)
    console.write(b"y" * 20)
    console.close()
    assert path.read_bytes() == b"y" * 20 and path.with_name("pool-0.log.1").read_bytes() == b"x" * 90


def test_the_qemu_console_reader_writes_through_a_rotating_file(tmp_path):
    """The reader QEMU's serial console goes through, fed by a real child process."""
    child = pexpect.spawn("sh", ["-c", "i=0; while [ $i -lt 1000 ]; do echo line $i of the console; i=$((i+1)); done"])
    ended = threading.Event()
    reader = ConsoleReader(child, _open_console(tmp_path / "guest-0.log", 4096), "never", ended.set)
    reader.start()
    assert ended.wait(20)
    files = sorted(tmp_path.glob("guest-0.log*"))
    assert [f.name for f in files] == ["guest-0.log", "guest-0.log.1", "guest-0.log.2", "guest-0.log.3"]
    assert all(f.stat().st_size <= 4096 for f in files)
    current = (tmp_path / "guest-0.log").read_text()
    assert "line 999 of the console" in current and current.endswith("===== console closed\n")
