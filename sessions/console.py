"""A target's console file, rotated by size (no Django: the session writes it).

A QEMU guest's serial console can print for days; the file is cut at
``max_bytes`` into ``name.log.1`` … ``name.log.<backups>`` (the oldest
dropped), as the machine logs are, so the console page's tail stays cheap
and the disk bounded. ``manage.py purge --consoles`` removes old ones.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_BACKUPS = 3


class RotatingConsole:
    """A binary, append-only file object (write, flush, close) that rotates."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS):
        self.path, self.max_bytes, self.backups = Path(path), max(1, max_bytes), max(1, backups)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "ab")
        self.size = self.file.tell()

    def write(self, data: bytes) -> int:
        """Append; a write that would pass ``max_bytes`` starts a new file
        first, and one longer than a whole file is cut across files."""
        view = memoryview(data)
        while view:
            if self.size and self.size + len(view) > self.max_bytes:
                self._rotate()
            part = view[:self.max_bytes - self.size]
            self.size += self.file.write(part)
            view = view[len(part):]
        return len(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @property
    def closed(self) -> bool:
        return self.file.closed

    def _rotate(self) -> None:
        self.file.close()
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.file = open(self.path, "ab")
        self.size = 0
