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
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from typing import BinaryIO

from django.db import IntegrityError, connection, models, transaction

from distributor.models.rows import execute, on_postgresql, table

CHUNK_BYTES = 1 << 20
FLUSH_BYTES = 16 << 20  # written to a local copy between two requests to write them out


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
        is, in one transaction with its Blob row (a reader never sees half of a
        content). One pass: the chunks go in under a staging key while they are
        hashed, and are moved to their checksum at the end. A content no stored
        one has the size of cannot be there already; one that has is hashed
        first, so that storing it again writes nothing."""
        if cls.objects.filter(size=_size(content)).exists():
            known = cls.objects.filter(pk=sha256_of(content)).first()
            if known is not None:
                return known
        try:
            with transaction.atomic():
                return cls._write(content)
        except _StoredMeanwhile as stored:  # rolled back: another upload stored the same content first
            return cls.objects.get(pk=stored.sha256)

    @classmethod
    def _write(cls, content: BinaryIO) -> "Blob":
        staging = cls.objects.create(sha256=f"staging-{uuid.uuid4().hex}", size=0)
        content.seek(0)
        sha256, size = BlobChunk.write(staging.sha256, _read_chunks(content))
        try:
            with transaction.atomic():
                blob = cls.objects.create(sha256=sha256, size=size)
        except IntegrityError:
            raise _StoredMeanwhile(sha256) from None
        # The chunks' rows change key; PostgreSQL keeps their out-of-line bytes where they are.
        execute(f"UPDATE {table(BlobChunk)} SET blob_id = %s WHERE blob_id = %s", [sha256, staging.sha256])
        execute(f"DELETE FROM {table(cls)} WHERE sha256 = %s", [staging.sha256])
        return blob

    def chunks(self) -> Iterator[bytes]:
        """The content in order, streamed by one statement (never more than a
        chunk or two in memory); BlobMissing when a chunk is not there. Read
        it to the end: the statement holds the connection until then."""
        expected = read = 0
        with closing(BlobChunk.stream(self.sha256)) as rows:  # a gap ends the statement at once
            for index, chunk in rows:
                if index != expected:
                    raise BlobMissing(f"chunk {expected} of content {self.sha256} is not in the database")
                expected += 1
                read += len(chunk)
                yield chunk
        if read < self.size:
            raise BlobMissing(f"chunk {expected} of content {self.sha256} is not in the database")

    def write_to(self, handle: BinaryIO) -> tuple[int, str]:
        """Write the content into the file ``handle``, on disk when this
        returns (fsync); the number of bytes written and their SHA-256, for
        the caller to verify (BlobMissing as chunks())."""
        digest, written = hashlib.sha256(), 0
        with _written_out(handle) as wrote:
            for chunk in self.chunks():
                digest.update(chunk)
                handle.write(chunk)
                written += len(chunk)
                wrote(len(chunk))
        return written, digest.hexdigest()

    @classmethod
    def delete_unused(cls, sha256s: set[str], used: set[str]) -> None:
        """Delete the contents among ``sha256s`` that no upload names (``used``)."""
        cls.objects.filter(pk__in=sha256s - used).delete()


class BlobChunk(models.Model):
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="chunk_rows")
    index = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        # Blob.chunks reads a content's chunks in order along this index.
        constraints = [models.UniqueConstraint(fields=["blob", "index"], name="one_chunk_per_index")]

    # Plain statements, not the ORM: Django's PostgreSQL cursors bind on the
    # client, so a MiB of bytes travelled as 2 MiB of escaped SQL text to be
    # parsed back. On PostgreSQL the chunks go in by one COPY in binary form
    # (streamed: the server stores a chunk while the next is read and hashed;
    # a statement per chunk waited for each) and come out by another
    # (bench/upload_image.py).

    @classmethod
    def write(cls, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store ``chunks`` in order as the chunks of the Blob ``key``; their
        SHA-256 and size in all."""
        digest, size = hashlib.sha256(), 0
        with _chunk_writer(key) as write:
            for index, chunk in enumerate(chunks):
                digest.update(chunk)
                size += len(chunk)
                write(index, chunk)
        return digest.hexdigest(), size

    @classmethod
    def stream(cls, sha256: str) -> Iterator[tuple[int, bytes]]:
        """(index, bytes) of the chunks of ``sha256`` in order, by one statement."""
        columns = f"SELECT {_INDEX}, data FROM {table(cls)} WHERE blob_id = %s ORDER BY {_INDEX}"
        if not on_postgresql():
            with connection.cursor() as cursor:
                cursor.execute(columns, [sha256])
                while row := cursor.fetchone():
                    yield row[0], bytes(row[1])
            return
        connection.ensure_connection()
        with connection.wrap_database_errors, connection.connection.cursor() as cursor:
            with cursor.copy(f"COPY ({columns}) TO STDOUT (FORMAT BINARY)", [sha256]) as copy:
                copy.set_types(["int4", "bytea"])
                yield from copy.rows()


_INDEX = connection.ops.quote_name("index")  # a keyword in SQLite


class _StoredMeanwhile(Exception):
    def __init__(self, sha256: str):
        self.sha256 = sha256


@contextmanager
def _chunk_writer(key: str) -> Iterator[Callable[[int, bytes], None]]:
    """A function that stores one chunk of the Blob ``key``: a row of one
    COPY on PostgreSQL, an INSERT each on SQLite."""
    if not on_postgresql():
        sql = f"INSERT INTO {table(BlobChunk)} (blob_id, {_INDEX}, data) VALUES (%s, %s, %s)"
        yield lambda index, data: execute(sql, [key, index, data])
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY {table(BlobChunk)} (blob_id, {_INDEX}, data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "int4", "bytea"])
            yield lambda index, data: copy.write_row((key, index, data))


@contextmanager
def _written_out(handle: BinaryIO) -> Iterator[Callable[[int], None]]:
    """The file's bytes on disk when the block ends. Past FLUSH_BYTES, a
    thread writes them out (fdatasync) each FLUSH_BYTES written, so the disk
    works while the content still streams in and the last fsync finds little
    left (200 MB: 0.32-0.35 s in all instead of 0.40-0.46 s for the writes,
    then an fsync)."""
    fd, requests, failed = handle.fileno(), queue.Queue(maxsize=1), []
    thread, pending = None, 0

    def flush() -> None:
        while requests.get():
            try:
                os.fdatasync(fd)
            except OSError as error:  # kept for the writer: a later fsync may not report it again
                failed.append(error)

    def wrote(count: int) -> None:
        nonlocal thread, pending
        pending += count
        if pending < FLUSH_BYTES:
            return
        pending = 0
        if thread is None:  # a binary of a few kB never needs one
            thread = threading.Thread(target=flush, name="blob-flush", daemon=True)
            thread.start()
        with suppress(queue.Full):  # still writing out the last ones: these go with the next
            requests.put_nowait(True)

    try:
        yield wrote
    finally:
        if thread is not None:
            requests.put(False)
            thread.join()
    handle.flush()
    os.fsync(fd)
    if failed:
        raise failed[0]


def _read_chunks(content: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: content.read(CHUNK_BYTES), b"")


def _size(content: BinaryIO) -> int:
    content.seek(0, os.SEEK_END)
    return content.tell()


def sha256_of(content: BinaryIO) -> str:
    """The SHA-256 of a seekable file's whole content, read a chunk at a time."""
    content.seek(0)
    digest = hashlib.sha256()
    for chunk in _read_chunks(content):
        digest.update(chunk)
    return digest.hexdigest()
