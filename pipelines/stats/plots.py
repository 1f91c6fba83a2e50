"""Figures of the stats tables, shared by `corpus report` and `notebooks/shard_stats.ipynb`.

Each function takes the tables from `pipelines.stats.load` (and `compare`) and returns a matplotlib Figure,
or None when the version has nothing to show for it (no mixture, no dialogues, no parent version), so
callers simply skip missing figures. Figures are built without pyplot: no GUI backend, no global figure
registry to leak memory in a long report, and a notebook displays them with `display(fig)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipelines.stats.scan import dense_histogram
from pipelines.stats.tables import primary_dataset

Tables = dict[str, pd.DataFrame]
SCORE_PREFIX = "ps_"
COLOURS = ["#3b7dd8", "#e07b39", "#4aa564", "#c4473a", "#8a63b8", "#8c6d4f", "#d36fb8", "#7f7f7f"]


def _subplots(*args, figsize: tuple[float, float], squeeze: bool = True, **kwargs):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, squeeze=squeeze, **kwargs)


def score_columns(tables: Tables) -> list[str]:
    columns = sorted(set(tables["histograms"]["column"]))
    ordered = ["prosocial"] if "prosocial" in columns else []
    return ordered + [c for c in columns if c.startswith(SCORE_PREFIX)]


def _subset(frame: pd.DataFrame, **where: object) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        if value is not None:
            mask &= (frame[key] == value).to_numpy()
    return frame[mask]


def stage_funnel(tables: Tables) -> Figure | None:
    """Documents entering and leaving each stage, with drops stacked on top of the survivors."""
    stages = tables["stages"]
    if not len(stages):
        return None
    fig, ax = _subplots(figsize=(8, 3.2))
    labels = [f"{s}\n{d}" for s, d in zip(stages["stage"], stages["dataset"], strict=True)]
    kept = stages["documents"].to_numpy(dtype=float)
    dropped = stages["dropped"].fillna(0).to_numpy(dtype=float)
    ax.bar(labels, kept, color=COLOURS[0], label="distinct documents out")
    ax.bar(labels, dropped, bottom=kept, color=COLOURS[3], alpha=0.7, label="dropped")
    rows = stages["rows"].to_numpy(dtype=float)
    ax.scatter(labels, rows, color="black", marker="_", s=400, label="rows (with repeats)", zorder=3)
    ax.set_ylabel("documents")
    ax.set_title("Documents per stage")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def drop_reasons(tables: Tables, top: int = 15) -> Figure | None:
    """The most frequent drop reasons per stage."""
    drops = tables["drops"]
    if not len(drops) or drops["documents"].sum() == 0:
        return None
    grouped = drops.groupby(["stage", "reason"])["documents"].sum().reset_index()
    grouped = grouped.sort_values("documents", ascending=False).head(top).iloc[::-1]
    fig, ax = _subplots(figsize=(8, 0.35 * len(grouped) + 1.2))
    stages = list(dict.fromkeys(grouped["stage"]))
    colours = [COLOURS[stages.index(s) % len(COLOURS)] for s in grouped["stage"]]
    ax.barh(
        [f"{s}: {r}" for s, r in zip(grouped["stage"], grouped["reason"], strict=True)],
        grouped["documents"],
        color=colours,
    )
    ax.set_xlabel("documents dropped")
    ax.set_title("Drop reasons")
    fig.tight_layout()
    return fig


def score_distributions(
    tables: Tables, datasets: list[str] | None = None, shard: str | None = None
) -> Figure | None:
    """Histogram of `prosocial` and every `ps_<dimension>` (distinct documents), one panel per column.

    Several datasets are overlaid as densities, e.g. the scored input against the upsampled mixture (rows,
    so repeats count), which shows what the tiers did to the distribution.
    """
    hist = tables["histograms"]
    columns = score_columns(tables)
    if not columns:
        return None
    if datasets is None:
        present = list(dict.fromkeys(tables["stages"]["dataset"]))
        datasets = [d for d in ("deduped", "scored") if d in present][:1] + [
            d for d in present if d.startswith("pretrain")
        ][:1]
        datasets = datasets or present[:1]
    cols = min(3, len(columns))
    rows = int(np.ceil(len(columns) / cols))
    fig, axes = _subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        for i, dataset in enumerate(datasets):
            part = _subset(hist, dataset=dataset, shard=shard)
            value = "rows" if dataset.startswith("pretrain") and shard is None else "documents"
            dense = dense_histogram(part, column, value)
            total = dense["count"].sum()
            if total == 0:
                continue
            width = dense["hi"] - dense["lo"]
            ax.bar(
                dense["lo"],
                dense["count"] / total / width,
                width=width,
                align="edge",
                alpha=0.55,
                color=COLOURS[i % len(COLOURS)],
                label=f"{dataset} ({value})",
            )
        ax.set_title(column)
        ax.set_xlim(0, 1)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Score distributions" + (f" - shard {shard}" if shard else ""), fontsize=11)
    fig.tight_layout()
    return fig


def tier_shares(tables: Tables) -> Figure | None:
    """Per profile: share of scored documents per tier vs share of mixture tokens, and effective epochs."""
    tiers = tables.get("tiers", pd.DataFrame())
    if not len(tiers):
        return None
    profiles = list(dict.fromkeys(tiers["profile"]))
    fig, axes = _subplots(len(profiles), 2, figsize=(9, 2.8 * len(profiles)), squeeze=False)
    for (ax_share, ax_epochs), profile in zip(axes, profiles, strict=True):
        part = tiers[tiers["profile"] == profile]
        names = part["tier"].astype(str).tolist()
        x = np.arange(len(names))
        docs = part["input_documents"].fillna(0).to_numpy(dtype=float)
        ax_share.bar(
            x - 0.2,
            docs / docs.sum() if docs.sum() else docs,
            width=0.4,
            color=COLOURS[0],
            label="scored documents",
        )
        ax_share.bar(x + 0.2, part["share"].fillna(0), width=0.4, color=COLOURS[1], label="mixture tokens")
        ax_share.set_xticks(x, names, rotation=20, fontsize=8)
        ax_share.set_title(f"{profile}: tier shares")
        ax_share.legend(fontsize=7)
        ax_epochs.bar(x, part["effective_epochs"].fillna(0), color=COLOURS[2])
        ax_epochs.set_xticks(x, names, rotation=20, fontsize=8)
        ax_epochs.set_title(f"{profile}: effective epochs")
    fig.tight_layout()
    return fig


def languages(tables: Tables, dataset: str | None = None, top: int = 10) -> Figure | None:
    dataset = dataset or primary_dataset(tables)
    lang = _subset(tables["languages"], dataset=dataset)
    if not len(lang):
        return None
    counts = lang.groupby("language")["documents"].sum().sort_values(ascending=False).head(top)
    fig, ax = _subplots(figsize=(6, 2.6))
    ax.bar(counts.index.astype(str), counts.to_numpy(), color=COLOURS[4])
    ax.set_title(f"Languages ({dataset}, distinct documents)")
    fig.tight_layout()
    return fig


def token_lengths(tables: Tables, dataset: str | None = None) -> Figure | None:
    dataset = dataset or primary_dataset(tables)
    part = _subset(tables["histograms"], dataset=dataset)
    if not len(part[part["column"] == "token_count"]):
        return None
    dense = dense_histogram(part, "token_count")
    dense = dense[dense["count"] > 0]
    fig, ax = _subplots(figsize=(6, 2.6))
    ax.bar(
        [
            f"<{int(h)}" if np.isfinite(h) else f">={int(lo)}"
            for lo, h in zip(dense["lo"], dense["hi"], strict=True)
        ],
        dense["count"],
        color=COLOURS[5],
    )
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_title(f"Tokens per document ({dataset})")
    fig.tight_layout()
    return fig


def shard_overview(tables: Tables, stage: str | None = None) -> Figure | None:
    """Rows and mean prosocial score per shard: outlier shards (a bad input file) stand out."""
    shards = tables["shards"]
    if stage:
        shards = shards[shards["stage"] == stage]
    if not len(shards):
        return None
    scores = tables["scores"]
    means = scores[scores["column"] == "prosocial"].set_index(["stage", "dataset", "shard"])["mean"]
    fig, (ax_rows, ax_score) = _subplots(1, 2, figsize=(10, 2.8))
    for i, (dataset, part) in enumerate(shards.groupby("dataset", sort=False)):
        ax_rows.scatter(
            np.arange(len(part)), part["rows"], s=12, color=COLOURS[i % len(COLOURS)], label=dataset
        )
        keys = list(zip(part["stage"], part["dataset"], part["shard"], strict=True))
        values = [means.get(k, np.nan) for k in keys]
        ax_score.scatter(np.arange(len(part)), values, s=12, color=COLOURS[i % len(COLOURS)], label=dataset)
    ax_rows.set_title("Rows per shard")
    ax_rows.set_xlabel("shard (in file order)")
    ax_score.set_title("Mean prosocial per shard")
    ax_score.set_xlabel("shard (in file order)")
    ax_rows.legend(fontsize=7)
    fig.tight_layout()
    return fig


def synthetic_outcomes(tables: Tables) -> Figure | None:
    synthetic = tables.get("synthetic", pd.DataFrame())
    if not len(synthetic) or synthetic["dialogues"].sum() == 0:
        return None
    totals = (
        synthetic[synthetic["outcome"].isin(["attempted", "accepted"])].groupby("outcome")["dialogues"].sum()
    )
    rejected = synthetic[synthetic["outcome"] == "rejected"].groupby("reason")["dialogues"].sum()
    bars = pd.concat(
        [
            totals.reindex(["attempted", "accepted"]).fillna(0),
            rejected.rename(lambda r: f"rejected: {r}").sort_values(ascending=False),
        ]
    )
    fig, ax = _subplots(figsize=(7, 0.35 * len(bars) + 1.2))
    ax.barh(bars.index[::-1], bars.to_numpy()[::-1], color=COLOURS[6])
    ax.set_xlabel("dialogues")
    ax.set_title("Synthetic dialogues")
    fig.tight_layout()
    return fig


def version_drift(drift: Tables, old: Tables, new: Tables, dataset: str | None = None) -> Figure | None:
    """Rows per dataset, the prosocial distribution and tier shares: old version against new."""
    if drift is None:
        return None
    dataset = dataset or primary_dataset(new)
    labels = drift["versions"]["version"].tolist()
    fig, (ax_counts, ax_dist, ax_tiers) = _subplots(1, 3, figsize=(13, 3.2))
    counts = drift["counts"]
    x = np.arange(len(counts))
    ax_counts.bar(x - 0.2, counts["rows_old"], width=0.4, color=COLOURS[7], label=labels[0])
    ax_counts.bar(x + 0.2, counts["rows_new"], width=0.4, color=COLOURS[0], label=labels[1])
    ax_counts.set_xticks(x, counts["dataset"], rotation=20, fontsize=8)
    ax_counts.set_title("Rows per dataset")
    ax_counts.legend(fontsize=7)
    column = (
        "prosocial" if "prosocial" in set(new["histograms"]["column"]) else (score_columns(new) or [None])[0]
    )
    if column:
        for colour, label, tables in ((COLOURS[7], labels[0], old), (COLOURS[0], labels[1], new)):
            dense = dense_histogram(_subset(tables["histograms"], dataset=dataset), column)
            total = dense["count"].sum()
            if total:
                ax_dist.step(dense["lo"], dense["count"] / total, where="post", color=colour, label=label)
        ax_dist.set_title(f"{column} ({dataset})")
        ax_dist.legend(fontsize=7)
    tiers = drift["tiers"]
    if len(tiers) and "share_old" in tiers:
        part = tiers[tiers["dataset"] == dataset]
        x = np.arange(len(part))
        ax_tiers.bar(x - 0.2, part["share_old"], width=0.4, color=COLOURS[7], label=labels[0])
        ax_tiers.bar(x + 0.2, part["share_new"], width=0.4, color=COLOURS[0], label=labels[1])
        ax_tiers.set_xticks(x, part["tier"].astype(str), rotation=20, fontsize=8)
        ax_tiers.set_title("Tier token shares")
        ax_tiers.legend(fontsize=7)
    else:
        ax_tiers.axis("off")
    fig.suptitle(f"Drift {labels[0]} -> {labels[1]}", fontsize=11)
    fig.tight_layout()
    return fig
