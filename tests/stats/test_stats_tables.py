"""Stats tables of real runs: reconciliation with the manifest and the Parquet files, load(), compare()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from datatrove.utils.stats import MetricStats
from stats_helpers import reconcile, stage_results

import pipelines.stats as stats
from pipelines.stats.licenses import identify, license_of
from pipelines.stats.scan import dense_histogram, domain_of, merge_metrics, metric_stats, scan_shard
from pipelines.stats.tables import StatsError, resolve_version


def test_stats_reconcile_with_manifest_and_parquet(corpus_out):
    """Rows in the stats == rows in the Parquet files, for every stage and shard of both versions."""
    for summary in corpus_out["runs"]:
        problems, checked = reconcile(corpus_out["out"], summary)
        assert not problems, "\n".join(problems)
        assert checked >= 6  # curate, dedup and mix shards at least
    tables = stats.load(corpus_out["out"] / "versions" / "v1")
    assert set(tables["stages"]["stage"]) == {"curate", "dedup", "mix"}


def test_curate_accounting_names_the_planted_drops(corpus_out):
    tables = stats.load(corpus_out["out"], version="v1")
    stages = tables["stages"].set_index("stage")
    curate = stages.loc["curate"]
    # 2 files x 14 documents + 3 planted (short, German, exact duplicate)
    assert curate["documents_in"] == 31
    assert curate["documents_in"] == curate["rows"] + curate["dropped"]
    reasons = tables["drops"].query("stage == 'curate'").groupby("reason")["documents"].sum()
    assert reasons.get("language", 0) >= 1  # the German document
    assert reasons.get("exact_duplicate", 0) >= 1
    summary = stage_results(corpus_out["out"], corpus_out["runs"][0])["curate"]
    assert reasons.to_dict() == {k: v for k, v in summary["dropped"].items() if v}
    # dedup: what the filter ranks read is what curate wrote
    assert stages.loc["dedup", "documents_in"] == curate["rows"]


def test_mix_tiers_match_mixture_json_and_parquet(corpus_out):
    version = corpus_out["out"] / "versions" / "v2"
    tables = stats.load(version)
    mixture = json.loads((version / "mixture.json").read_text())
    entry = mixture["profiles"]["default"]
    tiers = tables["tiers"].set_index("tier")
    frame = pq.read_table(version / "pretrain").to_pandas()
    for tier in entry["tiers"]:
        got = tiers.loc[tier["name"]]
        assert got["input_documents"] == tier["documents"]
        assert got["rows"] == int((frame["tier"] == tier["name"]).sum())
        assert got["documents"] == int(((frame["tier"] == tier["name"]) & (frame["repeat_index"] == 0)).sum())
        assert got["max_copies"] <= mixture["max_epochs"]
    assert tiers["rows"].sum() == len(frame)
    assert tiers["share"].sum() == pytest.approx(1.0)
    mix = tables["stages"].set_index("stage").loc["mix"]
    assert mix["documents_in"] == mix["documents"] + mix["dropped"]  # below tiers / factor 0 / not sampled


def test_histograms_and_scores_agree_with_the_data(corpus_out):
    version = corpus_out["out"] / "versions" / "v2"
    tables = stats.load(version)
    frame = pq.read_table(version / "pretrain").to_pandas()
    unique = frame[frame["repeat_index"] == 0]
    hist = tables["histograms"].query("dataset == 'pretrain'")
    dense = dense_histogram(hist, "prosocial", "documents")
    expected, _ = np.histogram(np.clip(unique["prosocial"], 0, 1), bins=np.linspace(0, 1, 51))
    assert dense["count"].tolist() == expected.tolist()
    merged = merge_metrics(tables["scores"].query("dataset == 'pretrain'"), ["column"]).set_index("column")
    for column in ("prosocial", "ps_care", "token_count"):
        assert merged.loc[column, "n"] == len(unique)
        assert merged.loc[column, "mean"] == pytest.approx(unique[column].astype(float).mean(), rel=1e-5)
        assert merged.loc[column, "std"] == pytest.approx(unique[column].astype(float).std(), rel=1e-4)
    domains = tables["domains"].query("dataset == 'pretrain'").set_index("domain")["documents"]
    expected_domains = unique["url"].map(domain_of).value_counts()
    assert domains.to_dict() == expected_domains.to_dict()


def test_datatrove_step_stats_merge_over_ranks(corpus_out):
    tables = stats.load(corpus_out["out"])
    steps, ranks = tables["steps"], tables["step_ranks"]
    curate = steps.query("stage == 'curate' and stat == 'documents_in'")
    per_rank = ranks.query("stage == 'curate' and stat == 'documents_in'")
    assert len(per_rank) >= 2
    assert curate["total"].sum() == per_rank["total"].sum()
    assert curate["total"].sum() == tables["stages"].set_index("stage").loc["curate", "documents_in"]
    assert {"logs/filter", "logs/signatures"} <= set(steps.query("stage == 'dedup'")["pipeline"])


def test_load_resolves_out_latest_and_version_folders(corpus_out, tmp_path):
    out = corpus_out["out"]
    assert resolve_version(out) == (out / "versions" / "v2").resolve()
    assert stats.load(out)["version"]["version"].iloc[0] == "v2"
    assert stats.load(out / "latest")["version"]["version"].iloc[0] == "v2"
    assert stats.load(out, version="v1")["version"]["version"].iloc[0] == "v1"
    assert stats.load(out / "versions" / "v1")["version"]["parent"].iloc[0] is None
    assert stats.load(out)["version"]["parent"].iloc[0] == "v1"
    with pytest.raises(StatsError, match="neither a version folder"):
        stats.load(tmp_path)
    with pytest.raises(StatsError, match="no published version 'v9'"):
        stats.load(out, version="v9")


def test_compare_reports_drift_between_versions(corpus_out):
    out = corpus_out["out"]
    v1, v2 = out / "versions" / "v1", out / "versions" / "v2"
    drift = stats.compare(v1, v2)
    counts = drift["counts"].set_index(["stage", "dataset"])
    manifest = {
        v: json.loads((out / "versions" / v / "manifest.json").read_text())["totals"]["rows"]
        for v in ("v1", "v2")
    }
    assert (
        counts.loc[("mix", "pretrain"), "rows_delta"]
        == manifest["v2"]["pretrain"] - manifest["v1"]["pretrain"]
    )
    assert counts.loc[("curate", "scored"), "rows_new"] > counts.loc[("curate", "scored"), "rows_old"]
    scores = drift["scores"]
    assert {"ks", "wasserstein", "psi"} <= set(scores.columns)
    assert scores["ks"].between(0, 1).all()
    assert set(drift["tiers"]["tier"]) >= {"exemplary", "prosocial", "neutral", "low"}
    same = stats.compare(v2, v2)
    assert (same["counts"]["rows_delta"] == 0).all()
    assert np.allclose(same["scores"][["ks", "wasserstein", "psi"]].to_numpy(), 0.0)
    assert (same["tiers"]["share_delta"].abs() < 1e-12).all()


# -- small units ---------------------------------------------------------------------------------------------
def test_score_bins_include_both_ends(tmp_path):
    import pyarrow as pa

    table = pa.table(
        {
            "prosocial": pa.array([0.0, 0.019, 0.03, 0.5, 1.0, None], pa.float32()),
            "url": [
                "https://WWW.Example.org/a",
                "http://user@host.example:8080/x",
                None,
                "not a url",
                "https://a.b/",
                "https://a.b/c",
            ],
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    out = scan_shard(tmp_path / "x.parquet", {"stage": "s", "dataset": "d", "shard": "x.parquet"})
    dense = dense_histogram(out["histograms"], "prosocial")
    assert dense["count"].iloc[0] == 2 and dense["count"].iloc[1] == 1 and dense["count"].iloc[-1] == 1
    assert dense["count"].sum() == 5
    scores = out["scores"].set_index("column")
    assert scores.loc["prosocial", "nulls"] == 1 and scores.loc["prosocial", "n"] == 5
    domains = out["domains"].set_index("domain")["documents"].to_dict()
    assert domains == {"example.org": 1, "host.example": 1, "(no url)": 2, "a.b": 2}


def test_metric_stats_merge_like_datatrove():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=n) for n in (5, 1, 40, 17)]
    total = MetricStats()
    for part in parts:
        total = total + metric_stats(part)
    values = np.concatenate(parts)
    assert total.n == len(values)
    assert total.mean == pytest.approx(values.mean())
    assert total.standard_deviation == pytest.approx(values.std(ddof=1))
    assert (total.min, total.max) == (values.min(), values.max())
    frame = pd.DataFrame(
        [
            {
                "column": "x",
                "n": p.size,
                "total": p.sum(),
                "mean": p.mean(),
                "std": 0.0,
                "min": p.min(),
                "max": p.max(),
                "m2": ((p - p.mean()) ** 2).sum(),
                "nulls": 0,
            }
            for p in parts
        ]
    )
    merged = merge_metrics(frame, ["column"]).iloc[0]
    assert merged["std"] == pytest.approx(values.std(ddof=1))


def test_licence_detection_walks_up_to_the_input_root(tmp_path):
    root = tmp_path / "data"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "LICENSE").write_text(
        "                Apache License\n          Version 2.0, January 2004\n"
    )
    (tmp_path / "LICENSE").write_text("MIT License")  # above the input root: must not be used
    (root / "a" / "deep" / "x.jsonl").write_text("{}")
    (root / "b" / "y.jsonl").write_text("{}")
    found = license_of(str(root / "a" / "deep" / "x.jsonl"), [root])
    assert (found.license, found.root) == ("apache-2.0", str(root / "a"))
    assert license_of(str(root / "b" / "y.jsonl"), [root]).license == "unknown"
    assert identify("Creative Commons Attribution-ShareAlike 4.0 International") == "cc-by-sa-4.0"
    assert identify("some custom terms") == "unknown"


def test_distribution_shift_measures():
    from pipelines.stats.drift import distribution_shift
    from pipelines.stats.scan import score_edges

    edges = score_edges()
    lo, hi = edges[:-1], edges[1:]
    low, high = np.zeros(50), np.zeros(50)
    low[0], high[-1] = 10, 10
    shift = distribution_shift(low, high, lo, hi)
    assert shift["ks"] == pytest.approx(1.0)
    assert shift["wasserstein"] == pytest.approx(0.98)  # from bin 0 to bin 49, 49 bins of 0.02
    assert shift["psi"] > 1.0
    same = distribution_shift(low, low * 3, lo, hi)
    assert same["ks"] == same["wasserstein"] == same["psi"] == 0.0
    assert np.isnan(distribution_shift(low, np.zeros(50), lo, hi)["ks"])


def test_mix_gap_in_a_full_tier_is_unaccounted_not_a_drop(tmp_path):
    """A tier with factor >= 1 gives every document a copy: documents missing from it are a loss to flag."""
    from pipelines.stats.tables import _mix_tables

    mixture = {
        "inputs": {"documents": 22},
        "profiles": {
            "p": {
                "folder": "pretrain",
                "tiers": [
                    {"name": "top", "factor": 2.0, "documents": 10, "tokens": 100},
                    {"name": "mid", "factor": 0.5, "documents": 10, "tokens": 100},
                ],
                "below_all_tiers": {"documents": 2, "tokens": 5},
            }
        },
    }
    (tmp_path / "mixture.json").write_text(json.dumps(mixture))
    shards = pd.DataFrame(
        [
            {"stage": "mix", "dataset": "pretrain", "shard": "s", "tier": "top", "rows": 14, "documents": 7,
             "tokens": 140, "max_copies": 2},
            {"stage": "mix", "dataset": "pretrain", "shard": "s", "tier": "mid", "rows": 5, "documents": 5,
             "tokens": 50, "max_copies": 1},
        ]
    )  # fmt: skip
    _, stage_rows, drops = _mix_tables(tmp_path, shards)
    dropped = {d["reason"]: d["documents"] for d in drops}
    assert dropped == {"below_all_tiers": 2, "not_sampled_tier_mid": 5}
    assert stage_rows[0]["documents_in"] - 12 - sum(dropped.values()) == 3  # the three lost top documents
