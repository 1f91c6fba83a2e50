"""Acceptance on the real pages in ../shared/data/web (WARC, HTML, JSONL and the truncated file) on the
2-worker LocalCluster: per-shard reconciliation, language keep/drop by reason, output loads with datasets."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
from curate_fixtures import read_counts, run_stage

from pipelines.parquet import list_parquet

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def web_runs(shared_data, dask_client, tmp_path_factory):
    runs = {}
    for name, languages in (("en", '["en"]'), ("en_de", '["en","de"]')):
        out = tmp_path_factory.mktemp(name)
        runs[name] = run_stage(
            out, [shared_data / "web"], dask_client, f"curate.languages={languages}", "curate.exclusions=true"
        )
    return runs


def _excluded(stage, step):
    rows = []
    for path in sorted((stage / "excluded" / step).glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            rows += [json.loads(line) for line in f]
    return rows


def test_web_reconciles_per_shard(web_runs):
    for summary, stage in web_runs.values():
        assert summary["documents_in"] > 1000 and summary["documents_out"] > 300
        assert summary["file_errors"] == {"truncated_gzip": 1}
        assert summary["dropped"]["truncated"] == 1
        for c in read_counts(stage):
            assert (
                c["documents_in"] == c["documents_out"] + sum(c["dropped"].values()) and c["unaccounted"] == 0
            )
            rows = pq.ParquetFile(stage / c["shard"]).metadata.num_rows if c["shard"] else 0
            assert rows == c["documents_out"]


def test_web_language_drops_are_counted_as_language(web_runs):
    summary, stage = web_runs["en"]
    dropped = _excluded(stage, "language")
    assert len(dropped) == summary["dropped"]["language"] > 50
    for row in dropped:  # every language drop is a non-English page or one lid.176 cannot place
        meta = row["metadata"]
        assert meta["language"] != "en" or meta["language_score"] <= 0.65
    df = (
        pq.ParquetDataset(list_parquet(summary["output_dir"]))
        .read(columns=["language", "source"])
        .to_pandas()
    )
    assert set(df["language"]) == {"en"}
    assert df["source"].str.contains("trafilatura-cache").any(), (
        "English pages of the multilingual set are kept"
    )


def test_web_german_kept_with_en_de(web_runs):
    (en, _), (en_de, _) = web_runs["en"], web_runs["en_de"]
    df = pq.ParquetDataset(list_parquet(en_de["output_dir"])).read(columns=["language"]).to_pandas()
    german = int((df["language"] == "de").sum())
    assert german >= 20, "most of the 56 German trafilatura-cache pages pass the filters"
    assert en_de["dropped"]["language"] <= en["dropped"]["language"] - german
    assert en_de["documents_out"] == en["documents_out"] + german


def test_web_loads_with_datasets(web_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    summary, _ = web_runs["en"]
    ds = load_dataset("parquet", data_dir=summary["output_dir"], split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == summary["documents_out"]
    assert ds.features["source_offset"].dtype == "int64" and ds.features["language_score"].dtype == "float32"
