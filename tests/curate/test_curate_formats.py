"""Each input format yields documents with text, provenance (source, offset), URL and crawl date."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curate_fixtures import (
    counters,
    html_page,
    html_warc,
    prose,
    read_reader,
    warc_record,
    write_jsonl,
    write_warc,
)


def test_warc_html_responses(tmp_path):
    docs, _ = read_reader([html_warc(tmp_path / "a.warc.gz", 3)])
    assert [d.metadata["url"] for d in docs] == [f"https://example.org/p{i}" for i in range(3)]
    assert all(d.metadata["kind"] == "html" and "<p>" in d.text for d in docs)
    assert docs[0].metadata["crawl_date"] == "2024-01-02T03:04:05Z"
    assert docs[0].metadata["source_offset"] == 0 and docs[1].metadata["source_offset"] > 0


def test_wet_conversion_records(tmp_path):
    records = [
        warc_record(
            prose(i).encode(), url=f"https://example.org/t{i}", kind="conversion", content_type="text/plain"
        )
        for i in range(2)
    ]
    docs, _ = read_reader([write_warc(tmp_path / "CC-MAIN-x.warc.wet.gz", records)])
    assert [d.text for d in docs] == [prose(0), prose(1)]
    assert all(d.metadata["kind"] == "text" for d in docs)


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.json.gz"])
def test_jsonl_compressions(tmp_path, name):
    rows = [
        {"text": prose(i), "metadata": {"url": f"https://e.org/{i}", "date_download": "2023-01-27"}}
        for i in range(3)
    ]
    docs, reader = read_reader([write_jsonl(tmp_path / name, rows)])
    assert [d.text for d in docs] == [r["text"] for r in rows]
    assert docs[2].metadata["url"] == "https://e.org/2" and docs[2].metadata["crawl_date"] == "2023-01-27"
    assert counters(reader)["documents_in"] == 3


def test_jsonl_configurable_text_field(tmp_path):
    path = write_jsonl(tmp_path / "c4.jsonl", [{"content": {"body": prose(1)}, "id": "https://e.org/x"}])
    docs, _ = read_reader([path], text_field="content.body")
    assert docs[0].text == prose(1) and docs[0].metadata["url"] == "https://e.org/x"
    docs, reader = read_reader([path])
    assert docs == [] and counters(reader)["dropped_missing_text"] == 1


def test_parquet_rows(tmp_path):
    table = pa.table(
        {"text": [prose(1), prose(2)], "url": ["https://e.org/1", None], "date": ["2020-01-01", "2020-01-02"]}
    )
    pq.write_table(table, tmp_path / "p.parquet")
    docs, _ = read_reader([tmp_path / "p.parquet"])
    assert [d.metadata["source_offset"] for d in docs] == [0, 1]
    assert docs[0].metadata["url"] == "https://e.org/1" and docs[1].metadata["url"] is None
    assert docs[1].metadata["crawl_date"] == "2020-01-02"


def test_parquet_text_as_pandas_category_or_large_string(tmp_path):
    import pandas as pd

    texts = [prose(1), prose(2), prose(1)]
    pd.DataFrame({"text": pd.Categorical(texts)}).to_parquet(tmp_path / "cat.parquet")  # dictionary<string>
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), tmp_path / "large.parquet")
    for name in ("cat.parquet", "large.parquet"):
        docs, reader = read_reader([tmp_path / name])
        assert [d.text for d in docs] == texts and "dropped_wrong_schema" not in counters(reader)


def test_html_folder_with_gzip_and_canonical_url(tmp_path):
    page = html_page(prose(1)).replace("<head>", '<head><link rel="canonical" href="https://e.org/canon">')
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "a.html").write_text(page)
    (tmp_path / "pages" / "b.html.gz").write_bytes(gzip.compress(html_page(prose(2)).encode()))
    docs, _ = read_reader([tmp_path / "pages"])
    assert len(docs) == 2 and all(d.metadata["kind"] == "html" for d in docs)
    assert docs[0].metadata["url"] == "https://e.org/canon" and docs[1].metadata["url"] is None


@pytest.mark.timeout(60)  # one regex used to backtrack cubically on unclosed "<link rel=" runs
def test_canonical_url_attributes_in_any_order_and_in_linear_time():
    from pipelines.curate.readers import _canonical_url

    assert _canonical_url(b"<link href='https://a.org/x' rel='canonical'>") == "https://a.org/x"
    assert _canonical_url(b'<LINK REL="Canonical" HREF="http://b.org/">') == "http://b.org/"
    assert _canonical_url(b'<meta property="og:url" content="https://c.org/p">') == "https://c.org/p"
    assert (
        _canonical_url(b'<link rel="stylesheet" href="https://d.org/s.css"><meta name=x content="https://e">')
        is None
    )
    assert _canonical_url(b'<link rel=canonical href="/relative">') is None
    assert _canonical_url(b"<link rel=canonical " * 3300) is None  # 66 KB: minutes before, milliseconds now


def test_parquet_batches_shrink_for_huge_rows(tmp_path):
    """Rows are converted to Python a batch at a time: huge texts must come a few per batch, not 256."""
    import os

    from pipelines.curate.readers import _parquet_batch_rows

    texts = [os.urandom(1 << 19).hex() for _ in range(8)]  # 1 MB each, incompressible
    pq.write_table(pa.table({"text": texts}), tmp_path / "big.parquet")
    group = pq.ParquetFile(tmp_path / "big.parquet").metadata.row_group(0)
    assert _parquet_batch_rows(group, budget=4 << 20) in (3, 4)
    assert 60 <= _parquet_batch_rows(group) <= 64  # the default 64 MB budget
    docs, _ = read_reader([tmp_path / "big.parquet"])
    assert [d.text for d in docs] == texts
