"""The scored-document Arrow schema and an atomic Parquet writer shared by every stage.

Why atomic: readers (dedup, mix, publish, `datasets.load_dataset`) glob `*.parquet`. A rank that crashes
half-way must never leave a file that looks complete, so every file is written as a hidden temp file
(`.<name>.tmp-<random>`) in the destination folder and renamed into place only after the Parquet footer is
written (pipelines/atomic.py: fsync, rename, fsync the folder). On a local disk the rename is atomic; on object
stores (`s3://`) it is a copy-then-delete, which still never exposes a partial file under the final name.

The scored-document contract (docs/architecture.md) is pinned here so that curate, dedup and mix agree on
column names, order and types; `scored_schema(dimensions)` adds one `ps_<dimension>` column per classifier
dimension.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import commit, is_local, temp_name

SCHEMA_VERSION = "scored-document/1"

# Column -> (type, description). `ps_<dimension>` columns go between language_score and prosocial.
_HEAD: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "stable id: sha256 hex (32 chars) of url + normalised text"),
    ("text", pa.string(), "extracted, cleaned main text"),
    ("url", pa.string(), "page URL when known (WARC-Target-URI, a url field), else null"),
    ("source", pa.string(), "input file the document came from (as given, any fsspec URL)"),
    (
        "source_offset",
        pa.int64(),
        "where the record starts: gzip member offset (.warc.gz), byte offset (WARC, JSONL; decompressed stream for .jsonl.gz/.zst), row number (Parquet), 0 (HTML file)",
    ),
    ("crawl_date", pa.string(), "crawl date when known (WARC-Date, date_download...), ISO 8601, else null"),
    ("language", pa.string(), "language code from fastText lid.176"),
    ("language_score", pa.float32(), "lid.176 probability of `language`"),
]
_TAIL: list[tuple[str, pa.DataType, str]] = [
    ("prosocial", pa.float32(), "aggregate of the primary profile over the ps_* scores"),
    ("token_count", pa.int32(), "tokens of `text` under the configured tokenizer.json"),
    ("dup_cluster_size", pa.int32(), "near-duplicate cluster size (1 until the dedup stage)"),
    ("classifier_version", pa.string(), "content hash of the classifier bundle that scored the document"),
]


# The system allocator gives freed row-group buffers back to the OS at once; Arrow's default (mimalloc) keeps
# them cached, which showed up as ~80 MB of extra peak RSS per worker in benchmarks/curate_throughput.py.
_POOL = pa.system_memory_pool()
_BATCH_ROWS = 128


def _release_memory() -> None:
    """Ask glibc to return freed heap to the OS after a row group (keeps a long rank's RSS flat)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    import ctypes

    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):  # musl, macOS, Windows
    _LIBC = None


def _field(name: str, dtype: pa.DataType, description: str) -> pa.Field:
    return pa.field(name, dtype, nullable=True, metadata={b"description": description.encode()})


def scored_schema(dimensions: Sequence[str] = ()) -> pa.Schema:
    """The scored-document schema with one float32 `ps_<dimension>` column per dimension, in order."""
    fields = [_field(*spec) for spec in _HEAD]
    fields += [
        _field(f"ps_{dim}", pa.float32(), f"P(prosocial) for dimension '{dim}', in [0, 1]")
        for dim in dimensions
    ]
    fields += [_field(*spec) for spec in _TAIL]
    return pa.schema(fields, metadata={b"prosocial_corpus.schema": SCHEMA_VERSION.encode()})


def score_dimensions(schema: pa.Schema) -> list[str]:
    """The dimensions of a scored-document schema (its `ps_*` columns, in order)."""
    return [name[3:] for name in schema.names if name.startswith("ps_")]


class AtomicParquetWriter:
    """Stream record batches into one Parquet file that appears under its final name only when complete.

    Use as a context manager: the file is committed (renamed into place) on a clean exit and the temp file is
    deleted if the block raises. Rows are buffered column by column and flushed as row groups of
    `row_group_rows` rows, or earlier when the buffered `text` passes `row_group_bytes` characters: the writer's
    memory is bounded by one row group whatever the input size (measured in benchmarks/curate_throughput.py).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schema: pa.Schema,
        *,
        compression: str = "zstd",
        compression_level: int | None = 3,
        row_group_rows: int = 2000,
        row_group_bytes: int = 8 << 20,
        storage_options: Mapping[str, Any] | None = None,
    ):
        self.fs, self.path = fsspec.core.url_to_fs(str(path), **dict(storage_options or {}))
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.rows_written = 0
        self._compression = compression
        self._compression_level = compression_level
        self._temp = temp_name(self.path)
        self._file = None
        self._writer: pq.ParquetWriter | None = None
        self._columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._pending = 0  # rows in self._columns (Python objects, converted every _BATCH_ROWS rows)
        self._batches: list[pa.RecordBatch] = []  # the row group being built, already in Arrow form
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self._closed = False

    # -- writing ------------------------------------------------------------------------------------------
    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            parent = self.path.rsplit("/", 1)[0] if "/" in self.path else ""
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
            self._file = self.fs.open(self._temp, "wb")
            self._writer = pq.ParquetWriter(
                self._file,
                self.schema,
                compression=self._compression,
                compression_level=self._compression_level,
                memory_pool=_POOL,
            )
        return self._writer

    def write_table(self, table: pa.Table) -> None:
        """Write a table (cast to the schema; a missing or mistyped column is an error naming it)."""
        self.flush()
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        self._open().write_table(table, row_group_size=self.row_group_rows)
        self.rows_written += table.num_rows

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Buffer one row (a mapping of column -> value; absent columns are null)."""
        for name, column in self._columns.items():
            column.append(row.get(name))
        self._pending += 1
        self._buffer_rows += 1
        if self._pending >= _BATCH_ROWS:
            self._to_arrow()
        text = row.get("text")
        self._buffer_bytes += len(text) if isinstance(text, str) else 0
        if self._buffer_rows >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self.flush()

    def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write_row(row)

    def _to_arrow(self) -> None:
        """Move the pending Python values into an Arrow batch (compact UTF-8 instead of Python strings)."""
        if not self._pending:
            return
        arrays = [pa.array(self._columns[f.name], type=f.type, memory_pool=_POOL) for f in self.schema]
        self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        for column in self._columns.values():
            column.clear()
        self._pending = 0

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        self._to_arrow()
        if not self._batches:
            return
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        self._batches = []
        self._buffer_rows = self._buffer_bytes = 0
        self._open().write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows_written += table.num_rows
        del table
        _release_memory()

    # -- committing ---------------------------------------------------------------------------------------
    def close(self) -> str:
        """Flush, finish the footer and rename the temp file into place; return the final path."""
        if self._closed:
            return self.path
        self.flush()
        self._open()  # a writer with no rows still produces a valid, empty file
        self._writer.close()
        self._file.close()
        if is_local(self.fs):
            commit(self._temp, self.path)
        else:
            self.fs.mv(self._temp, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the temp file; the final path is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
            if self._file is not None:
                self._file.close()
        finally:
            if self.fs.exists(self._temp):
                self.fs.rm(self._temp)

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_table_atomic(table: pa.Table, path: str | os.PathLike, **kwargs: Any) -> str:
    """Write a whole table atomically (see AtomicParquetWriter); return the final path."""
    with AtomicParquetWriter(path, table.schema, **kwargs) as writer:
        writer.write_table(table)
    return writer.path


def list_parquet(folder: str | os.PathLike) -> list[str]:
    """Complete Parquet files of a folder (any fsspec URL), sorted; [] when it is not a folder.

    The one listing every stage uses: hidden temp files of a crashed writer (`.name.tmp-*`) are skipped, and
    the folder is listed, not globbed, so a name with glob characters ("run[1]") is not read as a pattern.
    Local folders keep the form they were given in (relative stays relative).
    """
    fs, path = fsspec.core.url_to_fs(str(folder))
    path = path.rstrip("/")
    if not fs.isdir(path):
        return []
    names = (
        e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True) if e["type"] == "file"
    )
    base = os.fspath(folder).rstrip("/") if is_local(fs) else fs.unstrip_protocol(path)
    return sorted(f"{base}/{n}" for n in names if n.endswith(".parquet") and not n.startswith("."))


def parquet_paths(folder: str | os.PathLike) -> list[Path]:
    """`list_parquet` of a local folder, as Paths."""
    return [Path(p) for p in list_parquet(folder)]
