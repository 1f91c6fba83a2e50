"""Drift between two versions: counts, score distribution shift, tier shares, languages and drop reasons.

Nightly refreshes change the corpus a little every day; these tables say how much and where, so that a
surprising jump (a new crawl with half the documents in another language, a classifier update that moves the
score distribution) is seen before anyone trains on the new version.

Distribution shift is measured on the per-dimension histograms (distinct documents, 0.02-wide bins):
the mean shift, the Kolmogorov-Smirnov statistic (largest gap between the two CDFs), the 1-Wasserstein
distance (area between the CDFs, in score units) and the population stability index (PSI over 10 bins of 0.1;
> 0.1 is usually read as a moderate shift, > 0.25 as a large one).

When either version was published by `corpus refresh`, its curate and dedup tables count only that run's new
inputs, so their difference to another version is no corpus change: `compare` leaves those stages out of every
table and says so in `notes`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from pipelines.stats.scan import dense_histogram, merge_metrics
from pipelines.stats.tables import PER_RUN_STAGES, is_refresh, load, require

Tables = dict[str, pd.DataFrame]
PSI_EPSILON = 1e-4
PSI_BINS = 10  # the usual decile-style PSI


def _tables(value: Any) -> Tables:
    if isinstance(value, dict):
        return value
    if isinstance(value, str | os.PathLike):
        return load(value)
    raise TypeError(
        f"expected a version folder, an output root or loaded stats tables, got {type(value).__name__}"
    )


def _version_label(tables: Tables, fallback: str) -> str:
    version = tables.get("version")
    if version is not None and len(version) and version["version"].iloc[0]:
        return str(version["version"].iloc[0])
    return fallback


def distribution_shift(old: np.ndarray, new: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, float]:
    """KS, 1-Wasserstein, PSI and mean shift between two histograms over the same bins."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    if old.sum() == 0 or new.sum() == 0:
        return {"ks": np.nan, "wasserstein": np.nan, "psi": np.nan, "mean_shift": np.nan}
    p, q = old / old.sum(), new / new.sum()
    cdf_p, cdf_q = np.cumsum(p), np.cumsum(q)
    width = np.where(np.isfinite(hi), hi - lo, 0.0)
    centres = np.where(np.isfinite(hi), (lo + hi) / 2, lo)
    # PSI on at most PSI_BINS coarse bins: with 50 fine bins and few documents, empty bins dominate it
    group = max(1, int(np.ceil(len(p) / PSI_BINS)))
    coarse_p = np.add.reduceat(p, np.arange(0, len(p), group))
    coarse_q = np.add.reduceat(q, np.arange(0, len(q), group))
    p_s, q_s = np.clip(coarse_p, PSI_EPSILON, None), np.clip(coarse_q, PSI_EPSILON, None)
    return {
        "ks": float(np.max(np.abs(cdf_p - cdf_q))),
        "wasserstein": float(np.sum(np.abs(cdf_p - cdf_q) * width)),
        "psi": float(np.sum((q_s - p_s) * np.log(q_s / p_s))),
        "mean_shift": float((q * centres).sum() - (p * centres).sum()),
    }


def _side_by_side(old: pd.DataFrame, new: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    merged = old[keys + values].merge(new[keys + values], on=keys, how="outer", suffixes=("_old", "_new"))
    for value in values:
        merged[f"{value}_old"] = merged[f"{value}_old"].fillna(0)
        merged[f"{value}_new"] = merged[f"{value}_new"].fillna(0)
        merged[f"{value}_delta"] = merged[f"{value}_new"] - merged[f"{value}_old"]
    return merged


def _without_per_run_stages(tables: Tables) -> Tables:
    """The tables without the rows of stages that count only one run's new inputs (curate, dedup)."""
    return {
        name: frame[~frame["stage"].isin(PER_RUN_STAGES)].reset_index(drop=True)
        if "stage" in frame.columns
        else frame
        for name, frame in tables.items()
    }


def compare(v_old: Any, v_new: Any) -> Tables:
    """Drift tables from `v_old` to `v_new` (version folders, output roots, or tables from `load`).

    Returns `versions`, `counts`, `scores`, `tiers`, `languages`, `drops` and `notes`; every value table has
    `<value>_old`, `<value>_new` and `<value>_delta` columns. With a refresh on either side, curate and dedup
    are left out (they count that run's new inputs, not the corpus) and `notes` says why.
    """
    old, new = _tables(v_old), _tables(v_new)
    for tables in (old, new):
        require(tables, ("stages", "scores", "histograms", "languages", "drops"))
    out: Tables = {}
    labels = [_version_label(old, str(v_old)), _version_label(new, str(v_new))]
    out["versions"] = pd.DataFrame(
        [{"side": "old", "version": labels[0]}, {"side": "new", "version": labels[1]}]
    )
    refreshes = [label for label, tables in zip(labels, (old, new), strict=True) if is_refresh(tables)]
    notes = []
    if refreshes:
        notes.append(
            f"{' and '.join(PER_RUN_STAGES)} not compared: {' and '.join(refreshes)} "
            f"{'is a refresh' if len(refreshes) == 1 else 'are refreshes'}, whose {' and '.join(PER_RUN_STAGES)} "
            "count only that run's new inputs, not the corpus"
        )
        old, new = _without_per_run_stages(old), _without_per_run_stages(new)
    out["notes"] = pd.DataFrame({"note": notes}, dtype=object)
    keys = ["stage", "dataset"]
    counts = _side_by_side(
        old["stages"], new["stages"], keys, ["shards", "rows", "documents", "tokens", "text_bytes"]
    )
    counts["rows_change"] = np.where(
        counts["rows_old"] > 0,
        counts["rows_delta"] / counts["rows_old"].where(counts["rows_old"] > 0, 1),
        np.nan,
    )
    out["counts"] = counts

    score_rows = []
    means_old = merge_metrics(old["scores"], [*keys, "column"]).set_index([*keys, "column"])
    means_new = merge_metrics(new["scores"], [*keys, "column"]).set_index([*keys, "column"])
    groups = sorted(
        set(map(tuple, old["histograms"][[*keys, "column"]].drop_duplicates().to_numpy()))
        | set(map(tuple, new["histograms"][[*keys, "column"]].drop_duplicates().to_numpy()))
    )
    for stage, dataset, column in groups:
        sides = []
        for tables in (old, new):
            hist = tables["histograms"]
            part = hist[(hist["stage"] == stage) & (hist["dataset"] == dataset)]
            sides.append(dense_histogram(part, column))
        shift = distribution_shift(
            sides[0]["count"].to_numpy(),
            sides[1]["count"].to_numpy(),
            sides[0]["lo"].to_numpy(),
            sides[0]["hi"].to_numpy(),
        )
        row = {
            "stage": stage,
            "dataset": dataset,
            "column": column,
            "documents_old": int(sides[0]["count"].sum()),
            "documents_new": int(sides[1]["count"].sum()),
        }
        for side, means in (("old", means_old), ("new", means_new)):
            key = (stage, dataset, column)
            row[f"mean_{side}"] = float(means.loc[key, "mean"]) if key in means.index else np.nan
        row["mean_delta"] = row["mean_new"] - row["mean_old"]
        score_rows.append({**row, **{k: v for k, v in shift.items() if k != "mean_shift"}})
    out["scores"] = pd.DataFrame(
        score_rows,
        columns=[
            "stage",
            "dataset",
            "column",
            "documents_old",
            "documents_new",
            "mean_old",
            "mean_new",
            "mean_delta",
            "ks",
            "wasserstein",
            "psi",
        ],
    )

    tier_values = ["share", "rows", "documents", "tokens", "effective_epochs"]
    tiers_old, tiers_new = old.get("tiers", pd.DataFrame()), new.get("tiers", pd.DataFrame())
    if len(tiers_old) or len(tiers_new):
        tiers_old = tiers_old.reindex(columns=["dataset", "tier", *tier_values])
        tiers_new = tiers_new.reindex(columns=["dataset", "tier", *tier_values])
        out["tiers"] = _side_by_side(tiers_old, tiers_new, ["dataset", "tier"], tier_values)
    else:
        out["tiers"] = pd.DataFrame(columns=["dataset", "tier"])

    def language_shares(tables: Tables) -> pd.DataFrame:
        lang = tables["languages"].groupby([*keys, "language"])["documents"].sum().reset_index()
        lang["share"] = lang["documents"] / lang.groupby(keys)["documents"].transform("sum")
        return lang

    out["languages"] = _side_by_side(
        language_shares(old), language_shares(new), [*keys, "language"], ["documents", "share"]
    ).sort_values([*keys, "documents_new"], ascending=[True, True, False])
    drops_old = old["drops"].groupby([*keys, "reason"])["documents"].sum().reset_index()
    drops_new = new["drops"].groupby([*keys, "reason"])["documents"].sum().reset_index()
    out["drops"] = _side_by_side(drops_old, drops_new, [*keys, "reason"], ["documents"])
    return out
