"""Uploaded binaries and boot images as sessions receive them (distributor.files)."""
from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from distributor.files import ContentGone, UploadedFiles
from distributor.models import Binary, Blob, BlobChunk, BootImage
from distributor.models.blobs import CHUNK_BYTES
from sessions import HostFault, TaskSetError


@pytest.fixture
def media(settings, tmp_path):
    settings.DATA_DIR = tmp_path  # this host's cache is DATA_DIR/cache


def upload(model, name: str, data: bytes):
    return model.store(name, ContentFile(data))[0]


def test_checksums_leave_unknown_names_out(db, media):
    upload(Binary, "hey", b"hey")
    assert UploadedFiles().checksums(["hey", "nothere"]) == {"hey": hashlib.sha256(b"hey").hexdigest()}


def test_binaries_come_with_their_bytes_in_the_order_asked(db, media):
    upload(Binary, "pi", b"pi bytes")
    upload(Binary, "hey", b"hey bytes")
    files = UploadedFiles().binaries(["hey", "gone", "pi"])
    assert list(files) == ["hey", "pi"]
    assert files["pi"].data == b"pi bytes" and files["pi"].sha256 == hashlib.sha256(b"pi bytes").hexdigest()


# -- issue 18, point 1: content in the database, a verified copy per host ----------------------------


def test_content_is_stored_once_in_chunks_and_comes_back_whole(db, media):
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two full chunks and a bit
    image = upload(BootImage, "image.elf", data)
    upload(BootImage, "same.elf", data)
    assert Blob.objects.count() == 1 and BlobChunk.objects.filter(blob=image.sha256).count() == 3
    assert max(len(chunk) for chunk in BlobChunk.objects.values_list("data", flat=True)) == CHUNK_BYTES
    assert b"".join(image.blob().chunks()) == data


def test_a_replaced_upload_drops_content_nothing_names_any_more(db, media):
    upload(Binary, "hey", b"first")
    upload(Binary, "other", b"shared")
    upload(Binary, "hey", b"shared")
    assert set(Blob.objects.values_list("sha256", flat=True)) == {hashlib.sha256(b"shared").hexdigest()}
    _, replaced = Binary.store("hey", ContentFile(b"second"))
    assert replaced and Blob.objects.count() == 2, "the shared content stays: 'other' names it"


def test_a_deleted_upload_takes_its_content_unless_another_names_it(db, media, admin_client):
    upload(Binary, "hey", b"shared")
    upload(BootImage, "image.elf", b"shared")
    upload(Binary, "pi", b"pi alone")
    Binary.objects.get(name="hey").delete()
    assert Blob.objects.count() == 2, "the image still names the shared content"
    pi = Binary.objects.get(name="pi")
    assert admin_client.post(f"/admin/distributor/binary/{pi.pk}/delete/", {"post": "yes"}).status_code == 302
    assert list(Blob.objects.values_list("sha256", flat=True)) == [hashlib.sha256(b"shared").hexdigest()]


def test_the_first_use_fetches_a_copy_into_this_hosts_cache(db, media, tmp_path):
    image = upload(BootImage, "image.elf", b"\x7fELF kernel")
    path = UploadedFiles().boot_image("image.elf")
    assert path == tmp_path / "cache" / image.sha256
    assert path.read_bytes() == b"\x7fELF kernel"
    assert UploadedFiles().boot_image("nothere") is None
    assert not [p for p in path.parent.iterdir() if p.name != image.sha256], "no temporary file left"


def test_a_damaged_cached_copy_is_fetched_again(db, media, tmp_path):
    row = upload(Binary, "hey", b"hey bytes")
    cached = tmp_path / "cache" / row.sha256
    assert UploadedFiles().binaries(["hey"])["hey"].data == b"hey bytes"
    cached.write_bytes(b"hey bytez")
    assert UploadedFiles().binaries(["hey"])["hey"].data == b"hey bytes"
    assert cached.read_bytes() == b"hey bytes"


def test_content_this_host_cannot_get_is_a_host_fault_naming_the_upload(db, media, tmp_path):
    row = upload(Binary, "hey", b"hey bytes")
    BlobChunk.objects.filter(blob=row.sha256).update(data=b"hey bytez")
    with pytest.raises(HostFault, match="binary 'hey': its content in the database does not match its sha256"):
        UploadedFiles().binaries(["hey"])
    assert not (tmp_path / "cache" / row.sha256).exists()


def test_content_the_database_no_longer_holds_is_the_task_sets_error_not_the_hosts(db, media, tmp_path):
    row = upload(Binary, "hey", b"hey bytes")
    Blob.objects.all().delete()
    with pytest.raises(ContentGone, match="binary 'hey': its content .* is no longer in the database .*resubmit"):
        UploadedFiles().binaries(["hey"])
    assert not isinstance(ContentGone("x"), HostFault) and isinstance(ContentGone("x"), TaskSetError)
    assert not (tmp_path / "cache" / row.sha256).exists()


def test_a_cache_this_host_cannot_write_is_a_host_fault(db, media, tmp_path):
    image = upload(BootImage, "image.elf", b"\x7fELF")
    (tmp_path / "cache" / image.sha256 / "in-the-way").mkdir(parents=True)
    with pytest.raises(HostFault, match="boot image 'image.elf': cannot keep a copy in .*cache on this host"):
        UploadedFiles().boot_image("image.elf")


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


def test_a_qemu_pool_boots_uploads_only_unless_the_site_allows_host_paths(db, media, settings, tmp_path):
    import logging

    from distributor.environment import host_environment
    from sessions import SessionInfo
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
    assert argv[argv.index("-kernel") + 1] == str(tmp_path / "cache" / image.sha256)
    for value in (str(host_file), "/etc/passwd", "../../etc/passwd"):
        with pytest.raises(HostFault, match=r"settings.kernel: .* is neither an uploaded boot image nor a host "
                                                r"path this site allows \(DISTRIBUTOR_QEMU_HOST_IMAGES is off\)"):
            command(value)
    settings.DISTRIBUTOR_QEMU_HOST_IMAGES = True
    argv = command(str(host_file))
    assert argv[argv.index("-kernel") + 1] == str(host_file)
