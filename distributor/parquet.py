"""Parquet files written one row group at a time, so memory stays flat
whatever the export's size: rows (tuples in column order) or CSV text are
turned into Arrow record batches of ROW_GROUP_ROWS rows, each written as a
row group and, when streaming, handed on as bytes before the next is read.
Memory holds one row group being gathered: the one written is let go of
first, and Arrow's freed pages go back to the system (jemalloc, decay 0).

The exports (``distributor.exports``) say which columns and types; this
module knows nothing of the models.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq


def _return_freed_memory() -> None:
    """Arrow's buffers from jemalloc, which hands freed pages back to the
    system at once (decay 0): with the default pool (mimalloc) a row group's
    freed pages stayed resident, some 20 MB of an export's peak. Arrow is
    used by this module alone, so the process-wide pool is this module's."""
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        return
    pa.set_memory_pool(pool)


_return_freed_memory()

ROW_GROUP_ROWS = 65_536
# Python rows turned into a batch at a time: a tuple of boxed values costs some
# ten times its Arrow columns, so rows are converted well before a row group.
BATCH_ROWS = 8_192
# Text parsed at a time on the COPY path (some 8,000 task-jobs): Arrow's parser
# needs several times a block's size, so a larger block only costs memory.
CSV_BLOCK_BYTES = 2**20
# The types an export column may have, by name (exports.py declares its columns with these).
TYPES = {"int64": pa.int64(), "int8": pa.int8(), "float64": pa.float64(), "string": pa.string(),
         "timestamp": pa.timestamp("us", tz="UTC")}


def schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    """An Arrow schema from (column, type name) pairs."""
    return pa.schema([(name, TYPES[kind]) for name, kind in columns])


def batches_from_rows(schema: pa.Schema, rows: Iterable[Sequence]) -> Iterator[pa.RecordBatch]:
    """Rows in column order, BATCH_ROWS at a time, as typed batches. Times
    may come as ISO 8601 text (what the CSV exports write)."""
    buffer: list[Sequence] = []
    for row in rows:
        buffer.append(row)
        if len(buffer) >= BATCH_ROWS:
            yield _batch(schema, buffer)
            buffer = []
    if buffer:
        yield _batch(schema, buffer)


def _batch(schema: pa.Schema, rows: list[Sequence]) -> pa.RecordBatch:
    columns = zip(*rows)
    return pa.RecordBatch.from_arrays([_array(values, field.type) for values, field in zip(columns, schema)],
                                      schema=schema)


def _array(values: Sequence, kind: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(kind):
        return pa.array(values, pa.string()).cast(kind)
    return pa.array(values, kind)


def batches_from_csv(schema: pa.Schema, chunks: Iterable[bytes]) -> Iterator[pa.RecordBatch]:
    """CSV text with a header line (PostgreSQL's COPY … TO STDOUT of the same
    SELECT), parsed by Arrow about CSV_BLOCK_BYTES at a time. An empty
    unquoted cell is null; a quoted empty string stays a string, as COPY
    means them. The chunks are read here, in the caller's thread (a reader
    of Arrow's own would read ahead on another thread, with another database
    connection); blocks are cut after a line, which is a row: the exported
    text columns hold no line breaks (names refuse control characters)."""
    header: bytes | None = None
    block: list[bytes] = []
    size = 0
    for chunk in chunks:
        if header is None:
            block.append(chunk)
            text = b"".join(block)
            if b"\n" not in text:
                continue
            end = text.index(b"\n") + 1
            header, block, size = text[:end], [text[end:]], len(text) - end
            continue
        block.append(chunk)
        size += len(chunk)
        if size >= CSV_BLOCK_BYTES:
            text = b"".join(block)
            cut = text.rfind(b"\n") + 1
            yield from _parse_csv(schema, header + text[:cut])
            block, size = [text[cut:]], len(text) - cut
    rest = b"".join(block)
    if header is not None and rest.strip():
        yield from _parse_csv(schema, header + rest)


def _parse_csv(schema: pa.Schema, text: bytes) -> Iterator[pa.RecordBatch]:
    table = pa_csv.read_csv(
        io.BytesIO(text),
        read_options=pa_csv.ReadOptions(block_size=len(text) + 1, use_threads=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema, include_columns=schema.names, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False),
    )
    yield from table.cast(schema).combine_chunks().to_batches()


def parquet_chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """The Parquet file's bytes, handed on after each row group: for a
    StreamingHttpResponse. Memory holds one row group."""
    sink = _Drain()
    with pq.ParquetWriter(sink, schema) as writer:
        for group in _row_groups(batches):
            writer.write_table(group, row_group_size=max(group.num_rows, 1))
            # Let go of it before the next is gathered: the loop's name would
            # hold it meanwhile, two row groups in memory instead of one.
            del group
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data


def write_parquet(path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
    with pq.ParquetWriter(path, schema) as writer:
        for group in _row_groups(batches):
            writer.write_table(group, row_group_size=max(group.num_rows, 1))
            del group  # as in parquet_chunks


def _row_groups(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Batches gathered into tables of at least ROW_GROUP_ROWS rows (less than
    a batch more): each is written as one row group (a row group per small
    batch would make a file slow to read)."""
    gathered: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        gathered.append(batch)
        rows += batch.num_rows
        if rows >= ROW_GROUP_ROWS:
            yield pa.Table.from_batches(gathered)
            gathered, rows = [], 0
    if gathered:
        yield pa.Table.from_batches(gathered)


class _Drain:
    """A write-only file whose bytes are taken out as they come (Arrow writes
    a row group, the response sends it)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data
