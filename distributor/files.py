"""The uploaded binaries and boot images as sessions see them.

Sessions know nothing of Django models (``sessions/`` is the bottom layer), so
a machine hands its session an ``UploadedFiles`` (``sessions.base.Files``)
that reads the Binary and BootImage rows and their stored files.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from django.core.exceptions import ValidationError

from distributor.models import Binary, BootImage
from sessions.base import StoredFile, TargetFailure
from sessions.genode_protocol import BinaryError


class UploadedFiles:
    def checksums(self, names: Sequence[str]) -> dict[str, str]:
        return Binary.checksums(names)

    def binaries(self, names: Sequence[str]) -> dict[str, StoredFile]:
        rows = {row.name: row for row in Binary.objects.filter(name__in=names)}
        return {name: StoredFile(name, rows[name].sha256, read_binary(rows[name])) for name in names if name in rows}

    def boot_image(self, name: str) -> Path | None:
        """The stored file of the image ``name`` in the uploads folder; None when
        there is no such image (a name that could be a path never is one)."""
        try:
            BootImage.check_name(name)
        except ValidationError:
            return None
        image = BootImage.objects.filter(name=name).first()
        if image is None:
            return None
        try:
            return image.stored_path()
        except ValueError as error:
            raise TargetFailure(f"boot image {name!r}: {error}") from None


def read_binary(binary: Binary) -> bytes:
    """A binary's bytes, checked against its stored size and checksum: a
    damaged file would otherwise surface as a baffling target crash. Only
    its stored file in the uploads folder is opened."""
    try:
        with binary.stored_path().open("rb") as handle:
            data = handle.read()
    except ValueError as error:
        raise BinaryError(f"pkg: binary {binary.name!r}: {error}") from None
    except OSError as error:
        raise BinaryError(f"pkg: the stored file of binary {binary.name!r} cannot be read ({error})") from None
    if len(data) != binary.size or hashlib.sha256(data).hexdigest() != binary.sha256:
        raise BinaryError(f"pkg: the stored file of binary {binary.name!r} does not match its checksum; upload it again")
    return data
