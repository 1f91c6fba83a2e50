"""Per-shard statistics of one Parquet file, computed from the file itself.

Why from the file: the tables must reconcile with what readers get ("rows in the stats equal rows in the
Parquet files"), so counts come from the Parquet rows, never from what a stage believes it wrote. Only the
columns a statistic needs are read, batch by batch, so a shard of any size fits in a worker's memory.

Everything here is a pure function of one file, so Dask can scan shards in parallel on any worker; the
results are small pandas tables that merge by summation (histograms, counters) or, for running
mean/variance/min/max, with datatrove's `MetricStats` addition (the parallel Welford merge datatrove uses
for per-rank stats).

Any schema is accepted: scored documents, the mixture (`tier`, `repeat_index`) and chat-format dialogues
(`messages`). A statistic whose column is absent is simply not produced.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.utils.stats import MetricStats

SCORE_BINS = 50  # histograms of ps_* and prosocial: 50 bins of width 0.02 over [0, 1]
TOKEN_EDGES = np.array([0.0] + [2.0**k for k in range(0, 21)] + [math.inf])  # token_count: log2 bins
SHARD_TOP_DOMAINS = 20
_HOST = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?([^/:?#]+)")
BATCH_ROWS = 20_000


def score_edges() -> np.ndarray:
    return np.linspace(0.0, 1.0, SCORE_BINS + 1)


def domain_of(url: str | None) -> str | None:
    """Host name of a URL, lower-cased, without a leading `www.` (None when the URL has no host)."""
    if not isinstance(url, str) or not url:
        return None
    match = _HOST.match(url)
    if not match:
        return None
    host = match.group(1).lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def metric_stats(values: np.ndarray) -> MetricStats:
    """A datatrove MetricStats of an array (what `update` on each value would give), for merging with `+`."""
    values = values[~np.isnan(values)]
    if not len(values):
        return MetricStats()
    mean = float(values.mean())
    return MetricStats(
        total=float(values.sum()),
        n=len(values),
        mean=mean,
        min=float(values.min()),
        max=float(values.max()),
        _running_variance=float(((values - mean) ** 2).sum()),
    )


@dataclass
class _Acc:
    """Accumulators of one shard, filled batch by batch."""

    rows: int = 0
    documents: int = 0
    text_bytes: int = 0
    tokens: int = 0
    document_tokens: int = 0
    languages: Counter = field(default_factory=Counter)  # (language) -> documents
    language_tokens: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    domain_tokens: Counter = field(default_factory=Counter)
    hist_rows: dict[str, np.ndarray] = field(default_factory=dict)
    hist_docs: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, MetricStats] = field(default_factory=dict)
    nulls: Counter = field(default_factory=Counter)
    tiers: dict[str, list[int]] = field(default_factory=dict)  # tier -> [rows, documents, tokens, max_copies]
    categories: Counter = field(default_factory=Counter)  # (column, value) -> rows, for dialogues


def _text_bytes(batch: pa.RecordBatch) -> int:
    names = batch.schema.names
    if "text" in names:
        lengths = pc.binary_length(batch.column("text").cast(pa.large_string()))
        return int(pc.sum(lengths).as_py() or 0)
    if "messages" in names:
        flat = pc.list_flatten(batch.column("messages"))
        if pa.types.is_struct(flat.type) and flat.type.get_field_index("content") >= 0:
            content = pc.struct_field(flat, "content").cast(pa.large_string())
            return int(pc.sum(pc.binary_length(content)).as_py() or 0)
    return 0


def _add_hist(acc: _Acc, name: str, values: np.ndarray, unique: np.ndarray, edges: np.ndarray) -> None:
    finite = ~np.isnan(values)
    bins = len(edges) - 1
    # bin i holds [edges[i], edges[i+1]); the top edge (a score of exactly 1.0) falls in the last bin
    idx = np.clip(np.searchsorted(edges, values[finite], side="right") - 1, 0, bins - 1)
    rows = np.bincount(idx, minlength=bins)
    docs = np.bincount(idx[unique[finite]], minlength=bins)
    acc.hist_rows[name] = acc.hist_rows.get(name, np.zeros(bins, dtype=np.int64)) + rows
    acc.hist_docs[name] = acc.hist_docs.get(name, np.zeros(bins, dtype=np.int64)) + docs


def _scan_batch(acc: _Acc, batch: pa.RecordBatch) -> None:
    n = batch.num_rows
    names = batch.schema.names
    acc.rows += n
    if "repeat_index" in names:
        repeat = batch.column("repeat_index").to_numpy(zero_copy_only=False)
        unique = np.asarray(repeat == 0)
    else:
        unique = np.ones(n, dtype=bool)
    acc.documents += int(unique.sum())
    acc.text_bytes += _text_bytes(batch)
    if "token_count" in names:
        tokens = batch.column("token_count").to_numpy(zero_copy_only=False).astype(np.float64)
        tokens_filled = np.nan_to_num(tokens, nan=0.0)
        acc.tokens += int(tokens_filled.sum())
        acc.document_tokens += int(tokens_filled[unique].sum())
        _add_hist(acc, "token_count", tokens, unique, TOKEN_EDGES)
        acc.scores["token_count"] = acc.scores.get("token_count", MetricStats()) + metric_stats(
            tokens[unique]
        )
    else:
        tokens_filled = np.zeros(n)
    frame = pd.DataFrame({"_unique": unique, "_tokens": tokens_filled})
    if "language" in names:
        frame["language"] = batch.column("language").to_pandas().fillna("unknown")
        grouped = frame[frame["_unique"]].groupby("language", sort=False)["_tokens"].agg(["size", "sum"])
        acc.languages.update(grouped["size"].to_dict())
        acc.language_tokens.update(grouped["sum"].to_dict())
    if "url" in names:
        frame["domain"] = [domain_of(u) for u in batch.column("url").to_pylist()]
        frame["domain"] = frame["domain"].fillna("(no url)")
        grouped = frame[frame["_unique"]].groupby("domain", sort=False)["_tokens"].agg(["size", "sum"])
        acc.domains.update(grouped["size"].to_dict())
        acc.domain_tokens.update(grouped["sum"].to_dict())
    for name in names:
        if name.startswith("ps_") or name == "prosocial":
            values = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            acc.nulls[name] += int(np.isnan(values).sum())
            _add_hist(acc, name, values, unique, score_edges())
            acc.scores[name] = acc.scores.get(name, MetricStats()) + metric_stats(values[unique])
    if "tier" in names:
        tiers = batch.column("tier").to_pandas().fillna("(none)")
        repeat = (
            batch.column("repeat_index").to_numpy(zero_copy_only=False) if "repeat_index" in names else None
        )
        frame["tier"] = tiers.to_numpy()
        frame["_copy"] = repeat + 1 if repeat is not None else 1
        grouped = frame.groupby("tier", sort=False).agg(
            rows=("_unique", "size"),
            documents=("_unique", "sum"),
            tokens=("_tokens", "sum"),
            copies=("_copy", "max"),
        )
        for tier, row in grouped.iterrows():
            cur = acc.tiers.setdefault(str(tier), [0, 0, 0, 0])
            cur[0] += int(row["rows"])
            cur[1] += int(row["documents"])
            cur[2] += int(row["tokens"])
            cur[3] = max(cur[3], int(row["copies"]))
    for name in ("dimension", "model"):
        if name in names and pa.types.is_string(batch.schema.field(name).type):
            acc.categories.update((name, v) for v in batch.column(name).to_pandas().fillna("(none)"))


def _columns_needed(schema: pa.Schema) -> list[str]:
    wanted = {
        "text",
        "messages",
        "token_count",
        "language",
        "url",
        "tier",
        "repeat_index",
        "dimension",
        "model",
    }
    return [n for n in schema.names if n in wanted or n.startswith("ps_") or n == "prosocial"]


def scan_shard(path: str | Path, keys: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Statistics of one Parquet file as small tables, each carrying the `keys` columns (stage, dataset, shard).

    Raises ValueError naming the file when it is not readable Parquet.
    """
    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # any unreadable footer is reported the same way
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    acc = _Acc()
    columns = _columns_needed(parquet.schema_arrow)
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        _scan_batch(acc, batch)
    meta_rows = parquet.metadata.num_rows
    if acc.rows != meta_rows:  # only possible with a broken writer; never report a number readers won't see
        raise ValueError(f"{path}: footer says {meta_rows} rows but {acc.rows} were read")

    def table(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=columns)
        for key, value in reversed(list(keys.items())):
            frame.insert(0, key, value)
        return frame

    out: dict[str, pd.DataFrame] = {}
    out["shards"] = table(
        [
            {
                "rows": acc.rows,
                "documents": acc.documents,
                "file_bytes": path.stat().st_size,
                "text_bytes": acc.text_bytes,
                "tokens": acc.tokens,
                "document_tokens": acc.document_tokens,
            }
        ],
        ["rows", "documents", "file_bytes", "text_bytes", "tokens", "document_tokens"],
    )
    out["languages"] = table(
        [
            {"language": k, "documents": int(v), "tokens": int(acc.language_tokens[k])}
            for k, v in acc.languages.items()
        ],
        ["language", "documents", "tokens"],
    )
    out["domains"] = table(
        [
            {"domain": k, "documents": int(v), "tokens": int(acc.domain_tokens[k])}
            for k, v in acc.domains.items()
        ],
        ["domain", "documents", "tokens"],
    )
    hist_rows = []
    for name, counts in acc.hist_rows.items():
        edges = bin_edges(name)
        for i, count in enumerate(counts):
            hist_rows.append(
                {
                    "column": name,
                    "bin": i,
                    "lo": float(edges[i]),
                    "hi": float(edges[i + 1]),
                    "rows": int(count),
                    "documents": int(acc.hist_docs[name][i]),
                }
            )
    # sparse: empty bins are left out (dense_histogram puts them back)
    hist_rows = [r for r in hist_rows if r["rows"] or r["documents"]]
    out["histograms"] = table(hist_rows, ["column", "bin", "lo", "hi", "rows", "documents"])
    out["scores"] = table(
        [
            {"column": name, **metric_row(stat), "nulls": int(acc.nulls.get(name, 0))}
            for name, stat in acc.scores.items()
        ],
        ["column", *METRIC_COLUMNS, "nulls"],
    )
    out["tier_shards"] = table(
        [
            {"tier": t, "rows": v[0], "documents": v[1], "tokens": v[2], "max_copies": v[3]}
            for t, v in acc.tiers.items()
        ],
        ["tier", "rows", "documents", "tokens", "max_copies"],
    )
    out["categories"] = table(
        [{"column": c, "value": v, "rows": int(n)} for (c, v), n in acc.categories.items()],
        ["column", "value", "rows"],
    )
    return out


METRIC_COLUMNS = ["n", "total", "mean", "std", "min", "max", "m2"]


def bin_edges(column: str) -> np.ndarray:
    """The fixed bin edges of a histogram column (the same in every shard and version, so they add up)."""
    return TOKEN_EDGES if column == "token_count" else score_edges()


def dense_histogram(histograms: pd.DataFrame, column: str, value: str = "documents") -> pd.DataFrame:
    """One column's histogram summed over the given rows, with every bin present: bin, lo, hi, count."""
    edges = bin_edges(column)
    part = histograms[histograms["column"] == column].groupby("bin")[value].sum()
    counts = part.reindex(range(len(edges) - 1), fill_value=0).to_numpy()
    return pd.DataFrame(
        {"bin": np.arange(len(edges) - 1), "lo": edges[:-1], "hi": edges[1:], "count": counts}
    )


def metric_row(stat: MetricStats) -> dict[str, float]:
    """A MetricStats as table columns; `m2` (sum of squared deviations) keeps it mergeable after a round trip."""
    empty = stat.n == 0
    return {
        "n": int(stat.n),
        "total": float(stat.total),
        "mean": float(stat.mean) if not empty else math.nan,
        "std": float(stat.standard_deviation) if not empty else math.nan,
        "min": float(stat.min) if not empty else math.nan,
        "max": float(stat.max) if not empty else math.nan,
        "m2": float(stat._running_variance),
    }


def metric_from_row(row: Any) -> MetricStats:
    if int(row["n"]) == 0:
        return MetricStats()
    return MetricStats(
        total=float(row["total"]),
        n=int(row["n"]),
        mean=float(row["mean"]),
        min=float(row["min"]),
        max=float(row["max"]),
        _running_variance=float(row["m2"]),
    )


def merge_metrics(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Merge per-shard score summaries into one row per `by` group with datatrove's MetricStats `+`."""
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        total = MetricStats()
        for _, row in group.iterrows():
            total = total + metric_from_row(row)
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {**dict(zip(by, key, strict=True)), **metric_row(total), "nulls": int(group["nulls"].sum())}
        )
    return pd.DataFrame(rows, columns=[*by, *METRIC_COLUMNS, "nulls"])
