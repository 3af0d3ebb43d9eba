"""Uploaded binaries and boot images as sessions receive them (distributor.files)."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from distributor.files import UploadedFiles
from distributor.models import Binary, BootImage
from sessions import TaskSetError


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


def upload(model, name: str, data: bytes, **fields):
    row = model(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), **fields)
    row.file.save(f"{name}.bin", ContentFile(data), save=True)
    return row


def test_checksums_leave_unknown_names_out(db, media):
    upload(Binary, "hey", b"hey")
    assert UploadedFiles().checksums(["hey", "nothere"]) == {"hey": hashlib.sha256(b"hey").hexdigest()}


def test_binaries_come_with_their_bytes_in_the_order_asked(db, media):
    upload(Binary, "pi", b"pi bytes")
    upload(Binary, "hey", b"hey bytes")
    files = UploadedFiles().binaries(["hey", "gone", "pi"])
    assert list(files) == ["hey", "pi"]
    assert files["pi"].data == b"pi bytes" and files["pi"].sha256 == hashlib.sha256(b"pi bytes").hexdigest()


def test_a_damaged_binary_is_the_users_error_naming_it(db, media, tmp_path):
    row = upload(Binary, "hey", b"hey bytes")
    (tmp_path / row.file.name).write_bytes(b"other bytes")
    with pytest.raises(TaskSetError, match="binary 'hey' does not match its checksum; upload it again"):
        UploadedFiles().binaries(["hey"])
    (tmp_path / row.file.name).unlink()
    with pytest.raises(TaskSetError, match="binary 'hey' cannot be read"):
        UploadedFiles().binaries(["hey"])


def test_a_boot_image_is_found_by_name(db, media, tmp_path):
    image = upload(BootImage, "image.elf", b"\x7fELF")
    assert UploadedFiles().boot_image("image.elf") == tmp_path / image.file.name
    assert UploadedFiles().boot_image("nothere") is None
