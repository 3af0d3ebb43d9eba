"""An existing installation's uploads move from DATA_DIR/uploads into the
database (migration 0014, issue 18): nothing to do by hand, and a file that
is gone or damaged leaves its row without content rather than stopping the
migration."""
from __future__ import annotations

import hashlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("distributor", "0013_job_notify_bad")]
AFTER = [("distributor", "0014_uploads_in_the_database_and_host_health")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_uploads_on_disk_move_into_the_database(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "uploads"
    apps = migrate(BEFORE)
    try:
        Binary, BootImage = apps.get_model("distributor", "Binary"), apps.get_model("distributor", "BootImage")
        kernel = bytes(range(256)) * 5000  # two chunks
        for model, name, folder, data, on_disk in [
            (Binary, "hey", "binaries", b"\x7fELF hey", b"\x7fELF hey"),
            (BootImage, "image.elf", "images", kernel, kernel),
            (Binary, "gone", "binaries", b"gone", None),
            (Binary, "damaged", "binaries", b"right", b"wrong"),
        ]:
            if on_disk is not None:
                (settings.MEDIA_ROOT / folder).mkdir(parents=True, exist_ok=True)
                (settings.MEDIA_ROOT / folder / f"id-{name}").write_bytes(on_disk)
            model.objects.create(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                 file=f"{folder}/id-{name}")
    finally:
        apps = migrate(AFTER)

    Blob = apps.get_model("distributor", "Blob")
    contents = {blob.sha256: b"".join(bytes(c.data) for c in blob.chunk_rows.order_by("index")) for blob in Blob.objects.all()}
    assert contents == {hashlib.sha256(b"\x7fELF hey").hexdigest(): b"\x7fELF hey",
                        hashlib.sha256(kernel).hexdigest(): kernel}
    assert apps.get_model("distributor", "Binary").objects.count() == 3, "rows without content stay"
