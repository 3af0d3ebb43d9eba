"""Content in the database (distributor.models.blobs): one pass in, one
statement out, a content whole or not at all (issue 18's bench target)."""
from __future__ import annotations

import hashlib
import io
import threading

import pytest
from django.db import connection, transaction

from distributor.models import Blob, BlobChunk
from distributor.models import blobs
from distributor.models.blobs import CHUNK_BYTES, BlobMissing

pytestmark = pytest.mark.django_db


class ReadCounted(io.BytesIO):
    """A seekable file that counts the bytes read from it and the largest read."""

    def __init__(self, data: bytes, fail_after: int | None = None):
        super().__init__(data)
        self.bytes_read, self.largest, self.fail_after = 0, 0, fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.bytes_read >= self.fail_after:
            raise OSError("the disk went away")
        data = super().read(size)
        self.bytes_read += len(data)
        self.largest = max(self.largest, len(data))
        return data


def content(fill: int, size: int = 2 * CHUNK_BYTES + 5) -> bytes:
    return bytes([fill]) * size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_content_of_a_size_not_stored_is_read_once_a_chunk_at_a_time():
    data = content(1)
    source = ReadCounted(data)
    blob = Blob.store(source)
    assert (blob.sha256, blob.size) == (sha256(data), len(data))
    assert source.bytes_read == len(data), "one pass: hashed while it went in"
    assert source.largest <= CHUNK_BYTES
    assert b"".join(blob.chunks()) == data
    assert list(Blob.objects.values_list("sha256", flat=True)) == [blob.sha256], "no staging row left"
    assert BlobChunk.objects.filter(blob=blob).count() == 3


def test_storing_a_content_again_writes_nothing():
    data = content(2)
    first = Blob.store(io.BytesIO(data))
    chunk_ids = set(BlobChunk.objects.values_list("id", flat=True))
    again = ReadCounted(data)
    assert Blob.store(again) == first
    assert again.bytes_read == len(data), "hashed (a content of that size is stored), found, not read again"
    assert set(BlobChunk.objects.values_list("id", flat=True)) == chunk_ids


def test_a_new_content_of_a_stored_size_is_hashed_first_then_stored():
    Blob.store(io.BytesIO(content(3)))
    data = content(4)
    source = ReadCounted(data)
    blob = Blob.store(source)
    assert source.bytes_read == 2 * len(data)
    assert Blob.objects.count() == 2 and b"".join(blob.chunks()) == data


def test_a_content_that_fails_mid_store_leaves_nothing_behind():
    kept = Blob.store(io.BytesIO(b"kept"))
    with pytest.raises(OSError, match="the disk went away"):
        Blob.store(ReadCounted(content(5), fail_after=CHUNK_BYTES + 1))
    assert list(Blob.objects.all()) == [kept]
    assert BlobChunk.objects.count() == 1
    assert b"".join(Blob.store(io.BytesIO(content(5))).chunks()) == content(5), "the connection still works"


def test_chunks_come_out_in_order_and_a_gap_is_named():
    blob = Blob.objects.create(sha256="a" * 64, size=9)
    for index in (2, 0, 1):  # stored out of order
        BlobChunk.objects.create(blob=blob, index=index, data=f"<{index}>".encode())
    assert list(blob.chunks()) == [b"<0>", b"<1>", b"<2>"]
    BlobChunk.objects.filter(blob=blob, index=1).delete()
    with pytest.raises(BlobMissing, match=f"chunk 1 of content {'a' * 64} is not in the database"):
        b"".join(blob.chunks())
    assert Blob.objects.filter(pk=blob.pk).exists(), "the statement was ended: the connection still works"
    BlobChunk.objects.filter(blob=blob, index=2).delete()
    with pytest.raises(BlobMissing, match="chunk 1 of"):
        b"".join(blob.chunks())


def test_a_copy_is_written_out_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(blobs, "FLUSH_BYTES", 1)  # a write-out asked for after every chunk
    data = content(6)
    blob = Blob.store(io.BytesIO(data))
    with (tmp_path / "copy").open("wb") as handle:
        assert blob.write_to(handle) == (len(data), sha256(data))
    assert (tmp_path / "copy").read_bytes() == data


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite lets one writer at a time")
def test_the_same_content_stored_by_two_uploads_at_once_is_kept_once():
    data = content(7)
    stored, commit = threading.Event(), threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                Blob.store(io.BytesIO(data))
                stored.set()
                commit.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert stored.wait(10)
    # This upload sees no content of that size, writes its chunks, then
    # waits on the first one's key until it commits.
    threading.Timer(0.5, commit.set).start()
    blob = Blob.store(io.BytesIO(data))
    thread.join()
    assert blob.sha256 == sha256(data)
    assert list(Blob.objects.values_list("sha256", flat=True)) == [blob.sha256]
    assert BlobChunk.objects.count() == 3
    assert b"".join(blob.chunks()) == data
