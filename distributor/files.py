"""The uploaded binaries and boot images as sessions see them.

Sessions know nothing of Django models (``sessions/`` is the bottom layer), so
a machine hands its session an ``UploadedFiles`` (``sessions.base.Files``)
that reads the Binary and BootImage rows. Their content lives in the
database (``distributor.models.blobs``), where every host reads it; each
host keeps a copy in its own data folder (``DATA_DIR/cache/<sha256>``),
fetched on first use and verified against the checksum before use. No code
reads another host's path (issue 18).

A content this host cannot get or verify is a ``HostFault``: no try of the
task-set is used, and the host is marked unable to run the target.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from distributor.models import Binary, BootImage
from distributor.models.blobs import CHUNK_BYTES, Blob, BlobMissing
from sessions.base import HostFault, StoredFile

log = logging.getLogger("distributor")


class UploadedFiles:
    def __init__(self, cache: "ContentCache | None" = None):
        self.cache = cache or ContentCache(settings.DATA_DIR / "cache")

    def checksums(self, names: Sequence[str]) -> dict[str, str]:
        return Binary.checksums(names)

    def binaries(self, names: Sequence[str]) -> dict[str, StoredFile]:
        rows = {row.name: row for row in Binary.objects.filter(name__in=names)}
        found = {}
        for name in names:
            if name in rows:
                row = rows[name]
                path = self.cache.local_copy(row.sha256, row.size, f"binary {name!r}")
                found[name] = StoredFile(name, row.sha256, _read(path, f"binary {name!r}"))
        return found

    def boot_image(self, name: str) -> Path | None:
        """A verified local copy of the image ``name``; None when there is no
        such image (a name that could be a path never is one)."""
        try:
            BootImage.check_name(name)
        except ValidationError:
            return None
        image = BootImage.objects.filter(name=name).first()
        if image is None:
            return None
        return self.cache.local_copy(image.sha256, image.size, f"boot image {name!r}")


class ContentCache:
    """This host's copies of uploaded contents, one file per checksum. A copy
    is written to a temporary file while its checksum is computed and renamed
    into place only when it matches, so a file named by a checksum has that
    content (unless the disk changed it: a copy is hashed again once per
    process, and fetched again when it no longer matches)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._verified: set[tuple] = set()  # (path, inode, size, mtime) hashed by this process
        self._lock = threading.Lock()

    def local_copy(self, sha256: str, size: int, what: str) -> Path:
        path = self.folder / sha256
        try:
            if path.exists() and self._matches(path, sha256, size):
                return path
            if path.exists():
                log.warning("%s: the cached copy %s does not match its checksum; fetching it again", what, path)
            self._fetch(sha256, size, path, what)
        except OSError as error:
            raise HostFault(f"{what}: cannot keep a copy in {self.folder} on this host ({error})") from None
        return path

    def _matches(self, path: Path, sha256: str, size: int) -> bool:
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return True
        if stat.st_size != size or _file_sha256(path) != sha256:
            return False
        with self._lock:
            self._verified.add(key)
        return True

    def _fetch(self, sha256: str, size: int, path: Path, what: str) -> None:
        """Stream the content from the database into a temporary file beside
        ``path``, one chunk at a time, and rename it into place if it matches."""
        blob = Blob.objects.filter(pk=sha256).first()
        if blob is None:
            raise HostFault(f"{what}: its content (sha256 {sha256}) is not in the database; upload it again")
        self.folder.mkdir(parents=True, exist_ok=True)
        digest, written = hashlib.sha256(), 0
        handle = tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{sha256[:12]}-", delete=False)
        try:
            with handle:
                for chunk in blob.chunks():
                    digest.update(chunk)
                    written += len(chunk)
                    handle.write(chunk)
            if written != size or digest.hexdigest() != sha256:
                raise HostFault(f"{what}: its content in the database does not match its sha256 {sha256}; "
                                "upload it again")
            os.replace(handle.name, path)
        except BlobMissing as error:
            raise HostFault(f"{what}: {error}; upload it again") from None
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)
        log.info("%s: fetched %s bytes from the database into %s", what, written, path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise HostFault(f"{what}: cannot read its copy {path} on this host ({error})") from None
