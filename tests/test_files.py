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


# -- issue 16, point 7: only the uploads folder, by stored id; image names are no paths ----------


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../etc/passwd", "images/x", ".hidden", "a..b", "a\\b",
                                  "x" * 101, "image elf", "image\x00.elf", "ünïcode"])
def test_an_image_name_that_could_be_a_path_is_refused_everywhere(db, media, client, staff, name):
    from django.core.exceptions import ValidationError
    from django.core.files.uploadedfile import SimpleUploadedFile

    with pytest.raises(ValidationError, match="name"):
        BootImage.check_name(name)
    client.force_login(staff)
    response = client.post("/files/images", {"name": name, "file": SimpleUploadedFile("image.elf", b"\x7fELF")})
    assert response.status_code == 400
    assert not BootImage.objects.exists()


@pytest.mark.parametrize("name", ["image.elf", "zImage-5.10+rt", "_x", "a" * 100])
def test_plain_image_names_are_fine(name):
    BootImage.check_name(name)


def test_an_empty_image_name_is_refused_and_the_form_falls_back_to_the_files_name():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        BootImage.check_name("")
    assert BootImage.name_for("", "image.elf") == "image.elf"


def test_a_binary_name_with_two_dots_is_refused():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="nor holding '..'"):
        Binary.check_name("a..b")


def test_a_legacy_image_named_like_a_host_path_is_never_resolved(db, media):
    upload(BootImage, "legacy", b"\x7fELF")
    BootImage.objects.filter(name="legacy").update(name="/etc/passwd")  # stored before names were checked
    assert UploadedFiles().boot_image("/etc/passwd") is None


@pytest.mark.parametrize("stored", ["../../etc/passwd", "/etc/passwd", "images/../../etc/passwd", "binaries/x",
                                    "images/.hidden", "images/a/b"])
def test_a_row_whose_file_leaves_its_uploads_folder_opens_nothing(db, media, stored):
    from sessions import TargetFailure

    image = upload(BootImage, "image.elf", b"\x7fELF")
    BootImage.objects.filter(pk=image.pk).update(file=stored)
    with pytest.raises(TargetFailure, match="boot image 'image.elf': the stored file .* (is not an upload|leaves)"):
        UploadedFiles().boot_image("image.elf")
    binary = upload(Binary, "hey", b"hey")
    other_folder = {"binaries/x": "images/x"}  # the binary's own folder is binaries/
    Binary.objects.filter(pk=binary.pk).update(file=other_folder.get(stored, stored.replace("images/", "binaries/", 1)))
    with pytest.raises(TaskSetError, match="pkg: binary 'hey': the stored file"):
        UploadedFiles().binaries(["hey"])


def test_a_qemu_pool_boots_uploads_only_unless_the_site_allows_host_paths(db, media, settings, tmp_path):
    import logging

    from distributor.environment import host_environment
    from sessions import SessionInfo, TargetFailure
    from sessions.qemu import QemuSession

    settings.DISTRIBUTOR_NETNS = ""
    image = upload(BootImage, "image.elf", b"\x7fELF")
    host_file = tmp_path / "host-kernel"
    host_file.write_bytes(b"\x7fELF")

    def command(kernel: str) -> list[str]:
        info = SessionInfo(machine_id=1, slot=0, address="", settings={"kernel": kernel}, log=logging.getLogger("t"),
                           files=UploadedFiles(), host=host_environment())
        return QemuSession(info).command(None)

    argv = command("image.elf")
    assert argv[argv.index("-kernel") + 1] == str(tmp_path / image.file.name)
    for value in (str(host_file), "/etc/passwd", "../../etc/passwd"):
        with pytest.raises(TargetFailure, match=r"settings.kernel: .* is neither an uploaded boot image nor a host "
                                                r"path this site allows \(DISTRIBUTOR_QEMU_HOST_IMAGES is off\)"):
            command(value)
    settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True
    argv = command(str(host_file))
    assert argv[argv.index("-kernel") + 1] == str(host_file)
