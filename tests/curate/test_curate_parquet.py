"""The shared atomic Parquet writer and the scored-document schema (pipelines/parquet.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.atomic import write_bytes_atomic
from pipelines.parquet import (
    AtomicParquetWriter,
    list_parquet,
    score_dimensions,
    scored_schema,
    write_table_atomic,
)


def test_schema_follows_the_contract():
    schema = scored_schema(["care", "respect"])
    assert schema.names == [
        "id", "text", "url", "source", "source_offset", "crawl_date", "language", "language_score",
        "ps_care", "ps_respect", "prosocial", "token_count", "dup_cluster_size", "classifier_version",
    ]  # fmt: skip
    types = {f.name: f.type for f in schema}
    assert types["source_offset"] == pa.int64() and types["token_count"] == pa.int32()
    assert types["ps_care"] == pa.float32() and types["language_score"] == pa.float32()
    assert score_dimensions(schema) == ["care", "respect"]
    assert all(f.metadata and b"description" in f.metadata for f in schema)


def test_file_appears_only_when_complete(tmp_path):
    schema = scored_schema([])
    writer = AtomicParquetWriter(tmp_path / "a.parquet", schema, row_group_rows=2)
    with writer:
        for i in range(5):
            writer.write_row({"id": str(i), "text": "t", "dup_cluster_size": 1})
        assert list_parquet(tmp_path) == [], "nothing under the final name while writing"
        assert any(p.name.startswith(".a.parquet.tmp-") for p in tmp_path.iterdir())
    assert [p.rsplit("/", 1)[-1] for p in list_parquet(tmp_path)] == ["a.parquet"]
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.num_rows == 5 and meta.num_row_groups == 3
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert list(tmp_path.iterdir()) == [tmp_path / "a.parquet"], "no temp file left"


def test_list_parquet_takes_folder_names_literally(tmp_path):
    folder = tmp_path / "run[1]" / "x"  # a glob would read "[1]" as a character class
    folder.mkdir(parents=True)
    for name in ("b.parquet", "a.parquet", ".c.parquet.tmp-1", "notes.txt"):
        (folder / name).write_bytes(b"")
    (folder / "d.parquet").mkdir()
    assert list_parquet(folder) == [f"{folder}/a.parquet", f"{folder}/b.parquet"]
    assert list_parquet(tmp_path / "missing") == []
    # a remote folder's files keep their protocol (without it a caller would open a local path)
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("memory://bucket/run[1]/a.parquet", b"x")
    listed = list_parquet("memory://bucket/run[1]")
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["a.parquet"] and listed[0].startswith("memory://")
    assert fsspec.open(listed[0]).open().read() == b"x"


def test_crash_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError),
        AtomicParquetWriter(tmp_path / "b.parquet", scored_schema([])) as writer,
    ):
        writer.write_row({"id": "x", "text": "t"})
        writer.flush()
        raise RuntimeError("rank died")
    assert list(tmp_path.iterdir()) == []


def test_helpers(tmp_path):
    table = pa.table({"x": [1, 2]})
    write_table_atomic(table, tmp_path / "sub" / "t.parquet")
    assert pq.read_table(tmp_path / "sub" / "t.parquet").equals(table)
    write_bytes_atomic(tmp_path / "c.json", b"{}")
    assert (tmp_path / "c.json").read_bytes() == b"{}"
    with (
        pytest.raises((KeyError, pa.ArrowInvalid)),
        AtomicParquetWriter(tmp_path / "bad.parquet", scored_schema([])) as w,
    ):
        w.write_table(pa.table({"nope": [1]}))
    assert not (tmp_path / "bad.parquet").exists()
