"""The uploaded binaries and boot images as sessions see them.

Sessions know nothing of Django models (``sessions/`` is the bottom layer), so
a machine hands its session an ``UploadedFiles`` (``sessions.base.Files``)
that reads the Binary and BootImage rows. Their content lives in the
database (``distributor.models.blobs``), where every host reads it; each
host keeps a copy in its own data folder (``DATA_DIR/cache/<sha256>``),
fetched on first use and verified against the checksum before use. No code
reads another host's path (issue 18).

A content this host cannot get or verify is a ``HostFault``: no try of the
task-set is used, and the host is marked unable to run the target. A content
the database no longer holds (purged while no active job named it, then the
job reopened) is ``ContentGone``: the task-set's, on every host.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from distributor.models import BootImage, JobContent
from distributor.models.blobs import Blob, BlobMissing, sha256_of
from sessions.base import HostFault, StoredFile, TaskSetError

log = logging.getLogger("distributor")


class ContentGone(TaskSetError):
    """The content a job names is no longer stored: no host can run it."""


class UploadedFiles:
    """The uploads a machine's session uses. Inside a task-set of a job
    (``for_job``) a name means the content that job names (JobContent): the
    job runs what it was submitted with, on every host, even after the upload
    is replaced. Outside any job (a first boot, a health check) a name means
    the current upload."""

    def __init__(self, cache: "ContentCache | None" = None):
        self.cache = cache or ContentCache(settings.DATA_DIR / "cache")
        self.job_id: int | None = None
        self._named: dict[tuple[str, str], tuple[str, int]] = {}  # the job's, read once: they never change
        self.images_used: dict[str, str] = {}  # sha256 by name of the boot images last handed out

    def for_job(self, job_id: int | None) -> None:
        """Names mean the contents of job ``job_id`` from now on (None: the current uploads)."""
        if job_id != self.job_id:
            self.job_id, self._named = job_id, {}

    def checksums(self, names: Sequence[str]) -> dict[str, str]:
        return {name: sha256 for name, (sha256, _) in self._contents(JobContent.Kind.BINARY, names).items()}

    def binaries(self, names: Sequence[str]) -> dict[str, StoredFile]:
        found = {}
        for name, (sha256, size) in self._contents(JobContent.Kind.BINARY, names).items():
            what = f"binary {name!r}"
            found[name] = StoredFile(name, sha256, _read(self.cache.local_copy(sha256, size, what), what))
        return found

    def boot_image(self, name: str) -> Path | None:
        """A verified local copy of the image ``name``; None when there is no
        such image (a name that could be a path never is one)."""
        try:
            BootImage.check_name(name)
        except ValidationError:
            return None
        content = self._contents(JobContent.Kind.IMAGE, [name]).get(name)
        if content is None:
            return None
        sha256, size = content
        path = self.cache.local_copy(sha256, size, f"boot image {name!r}")
        self.images_used[name] = sha256
        return path

    def images_to_boot(self) -> list[str]:
        """The boot images handed out last (the target booted them) that the
        current job names with other content, their copies made ready: the
        target must boot again before it runs the job's task-sets."""
        named = self._contents(JobContent.Kind.IMAGE, list(self.images_used))
        differ = [name for name, sha256 in self.images_used.items() if name in named and named[name][0] != sha256]
        for name in differ:
            self.cache.local_copy(*named[name], f"boot image {name!r}")
        return differ

    def _contents(self, kind: str, names: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(sha256, size) by name among ``names``, in their order; unknown names absent."""
        if self.job_id is None:
            current = JobContent.current(kind, names)
            return {name: current[name] for name in names if name in current}
        if any((kind, name) not in self._named for name in names):
            for name, content in JobContent.resolve(self.job_id, kind, names).items():
                self._named[kind, name] = content
        return {name: self._named[kind, name] for name in names if (kind, name) in self._named}


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
        if blob is None:  # a job names it, so only ``purge --contents`` takes it
            raise ContentGone(f"{what}: its content (sha256 {sha256}) is no longer in the database (purged); "
                              "resubmit the job to run what is uploaded now")
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{sha256[:12]}-", delete=False)
        try:
            with handle:
                written, got = blob.write_to(handle)
            if written != size or got != sha256:
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
    with path.open("rb") as handle:
        return sha256_of(handle)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise HostFault(f"{what}: cannot read its copy {path} on this host ({error})") from None
