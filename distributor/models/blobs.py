"""Uploaded content, stored once where every host reads it: the database.

A binary or a boot image uploaded through one host must reach the machines of
every host (issue 18), whose data folders are their own. So the bytes live in
the database, content-addressed by SHA-256 and cut into chunks of at most
CHUNK_BYTES, so that a boot image of hundreds of MB goes in and comes out with
flat memory (one chunk at a time). Binary and BootImage rows name their content
by sha256; each host keeps a verified copy in its own data folder
(``distributor/files.py``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from django.db import IntegrityError, connection, models, transaction

from distributor.models.rows import execute, fetch, on_postgresql, table

CHUNK_BYTES = 1 << 20


class BlobMissing(Exception):
    """The content, or one of its chunks, is not in the database."""


class Blob(models.Model):
    """One content: its checksum (the key) and size; its bytes in BlobChunk rows."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.PositiveBigIntegerField()
    stored_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.sha256[:12]}… ({self.size} bytes)"

    @classmethod
    def store(cls, content: BinaryIO) -> "Blob":
        """The content of the seekable file ``content``, stored unless it already
        is. Two passes, a chunk at a time: the checksum (the key) first, then
        the chunks, in one transaction with their Blob row (a reader never sees
        half of a content)."""
        content.seek(0)
        digest, size = hashlib.sha256(), 0
        for chunk in _read_chunks(content):
            digest.update(chunk)
            size += len(chunk)
        sha256 = digest.hexdigest()
        known = cls.objects.filter(pk=sha256).first()
        if known is not None:
            return known
        content.seek(0)
        try:
            with transaction.atomic():
                blob = cls.objects.create(sha256=sha256, size=size)
                for index, chunk in enumerate(_read_chunks(content)):
                    BlobChunk.insert(sha256, index, chunk)
        except IntegrityError:  # the same content stored meanwhile by another upload
            return cls.objects.get(pk=sha256)
        return blob

    def chunks(self) -> Iterator[bytes]:
        """The content, one chunk per query (never more than a chunk in memory);
        BlobMissing when a chunk is not there."""
        index = read = 0
        while read < self.size:
            chunk = BlobChunk.read(self.sha256, index)
            if chunk is None:
                raise BlobMissing(f"chunk {index} of content {self.sha256} is not in the database")
            read += len(chunk)
            index += 1
            yield chunk

    @classmethod
    def delete_unused(cls, sha256s: set[str], used: set[str]) -> None:
        """Delete the contents among ``sha256s`` that no upload names (``used``)."""
        cls.objects.filter(pk__in=sha256s - used).delete()


class BlobChunk(models.Model):
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="chunk_rows")
    index = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        # Blob.chunks reads one (blob, index) at a time.
        constraints = [models.UniqueConstraint(fields=["blob", "index"], name="one_chunk_per_index")]

    # Plain statements, not the ORM: Django's PostgreSQL cursors bind on the
    # client, so a MiB of bytes travelled as 2 MiB of escaped SQL text to be
    # parsed back (a 50 MB image took 4.4 s to store); bound on the server it
    # goes as it is (0.7-1.0 s), and read with binary results in a third of
    # the time of the text form (bench/upload_image.py).

    @classmethod
    def insert(cls, sha256: str, index: int, data: bytes) -> None:
        execute(f"INSERT INTO {table(cls)} (blob_id, {_INDEX}, data) VALUES (%s, %s, %s)", [sha256, index, data])

    @classmethod
    def read(cls, sha256: str, index: int) -> bytes | None:
        sql = f"SELECT data FROM {table(cls)} WHERE blob_id = %s AND {_INDEX} = %s"
        if not on_postgresql():
            rows = fetch(sql, [sha256, index])
            return bytes(rows[0][0]) if rows else None
        import psycopg

        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, [sha256, index], binary=True)
            row = cursor.fetchone()
        return bytes(row[0]) if row else None


_INDEX = connection.ops.quote_name("index")  # a keyword in SQLite


def _read_chunks(content: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: content.read(CHUNK_BYTES), b"")
