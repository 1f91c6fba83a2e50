"""The stats tables of a version: built at publish time, written as Parquet under `<version>/stats/`.

`write_stats(ctx, version_id)` is called by `publish_run` before the manifest is written, so the manifest (and
`corpus verify`) covers the stats too. `load(path)` reads them back as named pandas DataFrames.

Tables (one Parquet file each; keys `stage` = curate|dedup|mix|synthesize, `dataset` = the output folder's
name, `shard` = file name):

| table | one row per | what |
|---|---|---|
| `shards` | stage, dataset, shard | rows, unique documents, file/text bytes, tokens; documents in, dropped, unaccounted |
| `stages` | stage, dataset | the same summed over shards, plus stage-level inputs and drops (mix, synthesize) |
| `drops` | stage, dataset, shard, reason | documents dropped (shard empty for stage-level drops) |
| `languages` | stage, dataset, shard, language | documents and tokens |
| `histograms` | stage, dataset, shard, column, bin | rows and documents per bin of `ps_*`, `prosocial` (0.02 wide) and `token_count` (log2) |
| `scores` | stage, dataset, shard, column | n, mean, std, min, max (datatrove MetricStats, mergeable via `m2`) |
| `domains` | stage, dataset, domain | the top domains by documents over all shards |
| `shard_domains` | stage, dataset, shard, domain | the top domains of each shard |
| `tiers` | dataset, tier | scored-input documents/tokens, mixture rows/documents/tokens, factor, effective epochs, share |
| `tier_shards` | stage, dataset, shard, tier | mixture rows, documents, tokens, max copies per shard |
| `synthetic` | outcome, reason, dimension | dialogues attempted, accepted, rejected (first reason), checks failed |
| `events` | stage, dataset, shard, kind, reason | non-document events: input file errors, repaired records, files not read (shard empty: skipped unread) |
| `categories` | stage, dataset, shard, column, value | counts of categorical columns of dialogues (`dimension`, `model`) |
| `steps` / `step_ranks` | stage, pipeline, [rank,] step, stat | datatrove counters, merged over ranks / per rank |
| `version` | - | version id, parent, run id, config hash, classifier version, profiles, created |

Mixture tables count every row (a document repeated three times is three rows); `documents` counts the
rows with `repeat_index == 0`, i.e. distinct documents.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import write_bytes_atomic
from pipelines.publish.publish import dangling_latest
from pipelines.stats.scan import scan_shard
from pipelines.stats.sources import (
    Dataset,
    LoggingDir,
    find_ledgers,
    first_step_counter,
    logging_dirs,
    read_json,
    step_drops,
)

if TYPE_CHECKING:
    from distributed import Client

    from pipelines.context import RunContext

STATS_DIR = "stats"
TOP_DOMAINS = 100
SHARD_TOP_DOMAINS = 20
STAGES = ("curate", "dedup", "mix", "synthesize")
# The datatrove logging dir (under the stage folder) whose rank r writes the output shard `r:05d.parquet`.
SHARD_LOGS = {"dedup": "logs/filter"}
KEYS = ["stage", "dataset", "shard"]


class StatsError(ValueError):
    """A folder that holds no published version or stats; the message names the path."""


# -- what a run produced ------------------------------------------------------------------------------------
def run_datasets(ctx: RunContext) -> list[Dataset]:
    """The Parquet folders of this run, in stage order: curate and dedup in the work folder, the rest staged."""
    datasets: list[Dataset] = []
    curate_dir = _output_dir(ctx.results.get("curate"))
    if curate_dir is not None:
        datasets.append(Dataset("curate", "scored", curate_dir, "work", ctx.work, (".hashes.parquet",)))
    dedup = ctx.results.get("dedup") or {}
    dedup_dir = _output_dir(dedup)
    if dedup_dir is not None and dedup.get("enabled", True) and dedup_dir != curate_dir:
        datasets.append(Dataset("dedup", "deduped", dedup_dir, "work", ctx.work))
    datasets += version_datasets(ctx.staging)
    return datasets


def version_datasets(version: Path) -> list[Dataset]:
    """The data folders of a (staged or published) version: pretrain*, midtrain."""
    out = []
    mixture = read_json(version / "mixture.json") or {}
    folders = [entry.get("folder") for entry in mixture.get("profiles", {}).values() if entry.get("folder")]
    if not folders:
        folders = sorted(p.name for p in version.glob("pretrain*") if p.is_dir())
    for folder in folders:
        out.append(Dataset("mix", folder, version / folder, "version", version))
    if (version / "midtrain").is_dir():
        out.append(Dataset("synthesize", "midtrain", version / "midtrain", "version", version))
    return out


def _output_dir(result: Any) -> Path | None:
    if isinstance(result, dict) and result.get("output_dir"):
        return Path(result["output_dir"])
    return None


# -- scanning -----------------------------------------------------------------------------------------------
def scan_datasets(datasets: list[Dataset], client: Client | None = None) -> dict[str, pd.DataFrame]:
    """Scan every shard (in parallel on the cluster when a client is given); concatenate per table."""
    jobs = []
    for ds in datasets:
        for path in ds.files():
            keys = {"stage": ds.stage, "dataset": ds.dataset, "shard": path.name}
            jobs.append((str(path), keys, ds))
    if client is not None and jobs:
        futures = client.map(scan_shard, [j[0] for j in jobs], [j[1] for j in jobs], pure=False)
        results = client.gather(futures)
    else:
        results = [scan_shard(path, keys) for path, keys, _ in jobs]
    tables: dict[str, list[pd.DataFrame]] = {}
    for (path, _, ds), result in zip(jobs, results, strict=True):
        result["shards"].insert(3, "location", ds.location)
        result["shards"].insert(4, "path", ds.relpath(Path(path)))
        for name, frame in result.items():
            tables.setdefault(name, []).append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}


# -- stage accounting ---------------------------------------------------------------------------------------
def _curate_counts(ctx: RunContext) -> list[dict[str, Any]]:
    """curate's final per-shard counts (`counts/<rank>.json`, after the cross-rank dedup pass)."""
    result = ctx.results.get("curate") or {}
    folder = Path(result.get("counts_dir") or ctx.work / "curate" / "counts")
    ledgers = find_ledgers(folder) if folder.is_dir() else {}
    if not ledgers:  # an older layout: any ledger-shaped JSON under the stage folder
        ledgers = find_ledgers(ctx.work / "curate")
    return [ledgers[rank] for rank in sorted(ledgers)]


def _synthesize_accounting(ctx: RunContext, ds: Dataset) -> tuple[list[dict], list[dict], list[dict]]:
    """Per midtrain shard: dialogues attempted (the chunk file's rows) and rejected by their first reason.

    Chunk files keep every attempt with its validation; a dialogue that passed its chunk's checks but is not
    in the midtrain shard was removed by the run-level near-duplicate pass.
    """
    result = ctx.results.get("synthesize") or {}
    chunks = Path(result.get("chunks_dir") or ctx.work / "synthesize" / "chunks")
    inputs, drops, dims = [], [], []
    for chunk in sorted(chunks.glob("chunk-*.parquet")) if chunks.is_dir() else []:
        if chunk.name.startswith("."):
            continue
        shard = chunk.name.replace("chunk-", "part-")
        table = pq.read_table(chunk, columns=["id", "dimension", "validation"]).to_pandas()
        kept_path = ds.folder / shard
        kept = (
            set(pq.read_table(kept_path, columns=["id"]).column("id").to_pylist())
            if kept_path.is_file()
            else set()
        )
        inputs.append({"stage": ds.stage, "dataset": ds.dataset, "shard": shard, "documents_in": len(table)})
        reasons = []
        for row in table.itertuples():
            validation = row.validation or {}
            if row.id in kept:
                reasons.append(None)
            elif not validation.get("passed"):
                found = validation.get("reasons")
                found = [] if found is None else list(found)
                reasons.append(found[0] if found else "unspecified")
            else:
                reasons.append("near_duplicate")
        table["reason"] = reasons
        for reason, count in table["reason"].dropna().value_counts().items():
            drops.append(
                {
                    "stage": ds.stage,
                    "dataset": ds.dataset,
                    "shard": shard,
                    "reason": reason,
                    "documents": int(count),
                }
            )
        for (dimension, reason), count in (
            table.fillna({"reason": "(accepted)"}).groupby(["dimension", "reason"]).size().items()
        ):
            dims.append({"dimension": dimension, "reason": reason, "dialogues": int(count)})
    # dialogues a refresh carried over from the previous version: inputs of this version, not attempts
    for carried in ds.files():
        if carried.name.startswith("carry-"):
            table = pq.read_table(carried, columns=["dimension"]).to_pandas()
            inputs.append(
                {"stage": ds.stage, "dataset": ds.dataset, "shard": carried.name, "documents_in": len(table)}
            )
            for dimension, count in table["dimension"].value_counts().items():
                dims.append({"dimension": dimension, "reason": "(carried)", "dialogues": int(count)})
    return inputs, drops, dims


def _shard_accounting(
    ctx: RunContext, datasets: list[Dataset]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list]:
    """Documents in and dropped by reason per shard: curate's counts, dedup's datatrove stats, synthesize's chunks.

    Returns (inputs, drops, events, synthetic-by-dimension rows). Ranks that kept nothing have no shard file but
    still appear in `inputs` and `drops`, so stage totals reconcile.
    """
    inputs, drops, events, dims = [], [], [], []
    for ds in datasets:
        if ds.stage == "curate":
            for counts in _curate_counts(ctx):
                shard = (
                    Path(counts["shard"]).name
                    if counts.get("shard")
                    else f"{int(counts['rank']):05d}.parquet"
                )
                keys = {"stage": ds.stage, "dataset": ds.dataset, "shard": shard}
                inputs.append({**keys, "documents_in": int(counts["documents_in"])})
                for reason, count in (counts.get("dropped") or {}).items():
                    drops.append({**keys, "reason": reason, "documents": int(count)})
                for kind in ("file_errors", "repaired"):
                    for reason, count in (counts.get(kind) or {}).items():
                        events.append({**keys, "kind": kind, "reason": reason, "count": int(count)})
            # input files skipped before any rank read them, events of the stage rather than of a shard: bad
            # inputs (broken links, FIFOs, gone since listing) are file errors; files in no readable format
            # (LICENSE, a .csv) are `not_read`
            from pipelines.curate.inputs import BAD_INPUT_REASONS

            curate = ctx.results.get("curate") or {}
            for reason, count in (curate.get("skipped_by_reason") or {}).items():
                kind = "file_errors" if reason in BAD_INPUT_REASONS else "not_read"
                events.append(
                    {
                        "stage": ds.stage,
                        "dataset": ds.dataset,
                        "shard": None,
                        "kind": kind,
                        "reason": reason,
                        "count": int(count),
                    }
                )
        elif ds.stage == "synthesize":
            more_inputs, more_drops, dims = _synthesize_accounting(ctx, ds)
            inputs += more_inputs
            drops += more_drops
        elif ds.stage in SHARD_LOGS:
            logs = {d.name: d for d in logging_dirs(ds.stage, ctx.work / ds.stage)}
            log = logs.get(SHARD_LOGS[ds.stage])
            if log is None:
                continue
            for rank, stats in log.rank_stats().items():
                keys = {"stage": ds.stage, "dataset": ds.dataset, "shard": f"{rank:05d}.parquet"}
                read = first_step_counter(stats, "documents")
                if read is not None:
                    inputs.append({**keys, "documents_in": read})
                for reason, count in step_drops(stats, "near_duplicate").items():
                    drops.append({**keys, "reason": reason, "documents": count})
    return (
        pd.DataFrame(inputs, columns=[*KEYS, "documents_in"]),
        pd.DataFrame(drops, columns=[*KEYS, "reason", "documents"]),
        pd.DataFrame(events, columns=[*KEYS, "kind", "reason", "count"]),
        dims,
    )


def _steps(ctx: RunContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """datatrove counters of every logging dir of every stage: merged, and per rank."""
    merged, ranks = [], []
    for stage in STAGES:
        for log in logging_dirs(stage, ctx.work / stage):
            merged += _step_rows(log, None, log.merged())
            for rank, stats in log.rank_stats().items():
                ranks += _step_rows(log, rank, stats)
    columns = ["stage", "pipeline", "step_index", "step", "stat", "total", "n", "mean", "min", "max", "unit"]
    return (
        pd.DataFrame(merged, columns=columns),
        pd.DataFrame(ranks, columns=["stage", "pipeline", "rank", *columns[2:]]),
    )


def _step_rows(log: LoggingDir, rank: int | None, stats: Any) -> list[dict[str, Any]]:
    rows = []
    for index, step in enumerate(stats.stats):
        base = {
            "stage": log.stage,
            "pipeline": log.name,
            **({"rank": rank} if rank is not None else {}),
            "step_index": index,
            "step": step.name,
        }
        rows.append(
            {
                **base,
                "stat": "time_seconds",
                "total": float(step.time_stats.total),
                "n": step.time_stats.n,
                "mean": float(step.time_stats.mean),
                "min": _finite(step.time_stats.min),
                "max": _finite(step.time_stats.max),
                "unit": "s",
            }
        )
        for key, metric in step.stats.items():
            rows.append(
                {
                    **base,
                    "stat": key,
                    "total": float(metric.total),
                    "n": int(metric.n),
                    "mean": float(metric.mean),
                    "min": _finite(metric.min),
                    "max": _finite(metric.max),
                    "unit": metric.unit,
                }
            )
    return rows


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else float("nan")


def _mix_tables(staging: Path, tier_shards: pd.DataFrame) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """Tier table (mixture.json's inputs and factors + the Parquet's actual rows) and the mix's stage drops."""
    mixture = read_json(staging / "mixture.json") or {}
    rows, stage_rows, drops = [], [], []
    actual = (
        tier_shards[tier_shards["stage"] == "mix"]
        .groupby(["dataset", "tier"], sort=False)
        .agg(
            rows=("rows", "sum"),
            documents=("documents", "sum"),
            tokens=("tokens", "sum"),
            max_copies=("max_copies", "max"),
        )
        if len(tier_shards)
        else pd.DataFrame(columns=["rows", "documents", "tokens", "max_copies"])
    )
    for name, entry in mixture.get("profiles", {}).items():
        folder = entry.get("folder", name)
        total_tokens = (
            float(actual.loc[folder, "tokens"].sum()) if folder in actual.index.get_level_values(0) else 0.0
        )
        left_out: list[tuple[str, int]] = []  # (reason, documents) of tiers not fully in the mixture
        for tier in entry.get("tiers", []):
            key = (folder, tier["name"])
            got = actual.loc[key] if key in actual.index else None
            rows_, docs, tokens = (
                (int(got["rows"]), int(got["documents"]), int(got["tokens"]))
                if got is not None
                else (0, 0, 0)
            )
            in_tokens = int(tier.get("tokens", 0))
            missing = int(tier.get("documents", 0)) - docs
            factor = float(tier.get("factor") or 0.0)
            # Only a tier whose factor is below 1 leaves documents out by design (the seeded hash picks which);
            # with factor >= 1 every document has a copy, so a gap stays "unaccounted" and the report warns.
            if missing > 0 and factor < 1:
                kind = "excluded_tier" if not factor else "not_sampled_tier"
                left_out.append((f"{kind}_{tier['name']}", missing))
            rows.append(
                {
                    "profile": name,
                    "dataset": folder,
                    "tier": tier["name"],
                    "min_score": tier.get("min_score"),
                    "profile_factor": tier.get("profile_factor"),
                    "factor": tier.get("factor"),
                    "input_documents": int(tier.get("documents", 0)),
                    "input_tokens": in_tokens,
                    "rows": rows_,
                    "documents": docs,
                    "tokens": tokens,
                    "max_copies": int(got["max_copies"]) if got is not None else 0,
                    "effective_epochs": tokens / in_tokens if in_tokens else 0.0,
                    "share": tokens / total_tokens if total_tokens else 0.0,
                }
            )
        below = entry.get("below_all_tiers") or {}
        if below:
            rows.append(
                {
                    "profile": name,
                    "dataset": folder,
                    "tier": "(below all tiers)",
                    "min_score": None,
                    "profile_factor": 0.0,
                    "factor": 0.0,
                    "input_documents": int(below.get("documents", 0)),
                    "input_tokens": int(below.get("tokens", 0)),
                    "rows": 0,
                    "documents": 0,
                    "tokens": 0,
                    "max_copies": 0,
                    "effective_epochs": 0.0,
                    "share": 0.0,
                }
            )
        documents_in = int(mixture.get("inputs", {}).get("documents", 0))
        stage_rows.append({"stage": "mix", "dataset": folder, "documents_in": documents_in})
        for reason, count in [("below_all_tiers", int(below.get("documents", 0))), *left_out]:
            if count:
                drops.append(
                    {"stage": "mix", "dataset": folder, "shard": None, "reason": reason, "documents": count}
                )
    if not rows and len(actual):  # no mixture.json: what the Parquet says, without inputs or factors
        for (folder, tier), got in actual.iterrows():
            total_tokens = float(actual.loc[folder, "tokens"].sum())
            rows.append(
                {
                    "profile": folder,
                    "dataset": folder,
                    "tier": tier,
                    "rows": int(got["rows"]),
                    "documents": int(got["documents"]),
                    "tokens": int(got["tokens"]),
                    "max_copies": int(got["max_copies"]),
                    "share": float(got["tokens"]) / total_tokens if total_tokens else 0.0,
                }
            )
    columns = [
        "profile",
        "dataset",
        "tier",
        "min_score",
        "profile_factor",
        "factor",
        "input_documents",
        "input_tokens",
        "rows",
        "documents",
        "tokens",
        "max_copies",
        "effective_epochs",
        "share",
    ]
    return pd.DataFrame(rows, columns=columns), stage_rows, drops


def _synthetic(result: Any, by_dimension: list[dict]) -> pd.DataFrame:
    """Dialogues attempted, accepted and rejected (by first reason, per dimension), plus the stage's own counts.

    `failed_check` rows count every check a dialogue failed (one dialogue can fail several), as the stage
    reports them; `rejected` rows count each rejected dialogue once, under its first reason.
    """
    rows = []
    frame = pd.DataFrame(by_dimension, columns=["dimension", "reason", "dialogues"])
    for dimension, group in frame.groupby("dimension", sort=True):
        attempted = int(group.loc[group["reason"] != "(carried)", "dialogues"].sum())
        if attempted:
            rows.append(
                {"outcome": "attempted", "reason": None, "dimension": dimension, "dialogues": attempted}
            )
        for reason, count in group.groupby("reason")["dialogues"].sum().items():
            if reason == "(carried)":
                rows.append(
                    {"outcome": "carried", "reason": None, "dimension": dimension, "dialogues": int(count)}
                )
            elif reason == "(accepted)":
                rows.append(
                    {"outcome": "accepted", "reason": None, "dimension": dimension, "dialogues": int(count)}
                )
            else:
                rows.append(
                    {"outcome": "rejected", "reason": reason, "dimension": dimension, "dialogues": int(count)}
                )
    if isinstance(result, dict):
        if not len(frame):  # no chunk files to count from: the stage's totals
            for outcome in ("attempted", "accepted", "rejected"):
                value = _first_int(result, (outcome,))
                if value is not None:
                    rows.append({"outcome": outcome, "reason": None, "dimension": None, "dialogues": value})
        for reason, count in sorted((result.get("rejected_by_reason") or {}).items()):
            rows.append(
                {"outcome": "failed_check", "reason": str(reason), "dimension": None, "dialogues": int(count)}
            )
        failed = result.get("chunks_failed") or {}
        if failed:
            chunk_size = result.get("target", 0) / max(int(result.get("chunks") or 1), 1)
            rows.append(
                {
                    "outcome": "failed_chunks",
                    "reason": "; ".join(sorted(set(map(str, failed.values()))))[:500],
                    "dimension": None,
                    "dialogues": int(round(len(failed) * chunk_size)),
                }
            )
        for key in ("target", "parsed", "engine_errors"):
            value = _first_int(result, (key,))
            if value is not None:
                rows.append({"outcome": key, "reason": None, "dimension": None, "dialogues": value})
    return pd.DataFrame(rows, columns=["outcome", "reason", "dimension", "dialogues"])


def _first_int(data: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None


def _top_domains(domains: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = ["stage", "dataset", "domain", "documents", "tokens"]
    if not len(domains):
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=[*KEYS, "domain", "documents", "tokens"])
    merged = (
        domains.groupby(["stage", "dataset", "domain"], sort=False)[["documents", "tokens"]]
        .sum()
        .reset_index()
    )
    merged = merged.sort_values(
        ["stage", "dataset", "documents", "domain"], ascending=[True, True, False, True]
    )
    top = merged.groupby(["stage", "dataset"], sort=False).head(TOP_DOMAINS).reset_index(drop=True)
    per_shard = domains.sort_values([*KEYS, "documents", "domain"], ascending=[True, True, True, False, True])
    per_shard = per_shard.groupby(KEYS, sort=False).head(SHARD_TOP_DOMAINS).reset_index(drop=True)
    return top, per_shard


# -- assembling ---------------------------------------------------------------------------------------------
SIZE_COLUMNS = ["rows", "documents", "file_bytes", "text_bytes", "tokens", "document_tokens"]


def build_tables(
    ctx: RunContext, version_id: str | None = None, parent: str | None = None
) -> dict[str, pd.DataFrame]:
    """Every stats table of the run `ctx` (its stages' outputs and logs, and the staged version)."""
    datasets = run_datasets(ctx)
    scanned = scan_datasets(datasets, ctx.client)
    empty = {
        "shards": [*KEYS, "location", "path", *SIZE_COLUMNS],
        "languages": [*KEYS, "language", "documents", "tokens"],
        "domains": [*KEYS, "domain", "documents", "tokens"],
        "histograms": [*KEYS, "column", "bin", "lo", "hi", "rows", "documents"],
        "scores": [*KEYS, "column", "n", "total", "mean", "std", "min", "max", "m2", "nulls"],
        "tier_shards": [*KEYS, "tier", "rows", "documents", "tokens", "max_copies"],
        "categories": [*KEYS, "column", "value", "rows"],
    }
    for name, columns in empty.items():
        scanned.setdefault(name, pd.DataFrame(columns=columns))

    shard_inputs, shard_drops, events, by_dimension = _shard_accounting(ctx, datasets)
    tiers, mix_stage, mix_drops = _mix_tables(ctx.staging, scanned["tier_shards"])
    synthetic = _synthetic(ctx.results.get("synthesize"), by_dimension)
    drops = pd.concat(
        [shard_drops, pd.DataFrame(mix_drops, columns=[*KEYS, "reason", "documents"])], ignore_index=True
    )
    drops = drops[drops["documents"] > 0].reset_index(drop=True)

    shards = scanned["shards"].merge(shard_inputs, on=KEYS, how="left")
    shard_dropped = shard_drops.groupby(KEYS)["documents"].sum().rename("dropped").reset_index()
    shards = shards.merge(shard_dropped, on=KEYS, how="left")
    known = shards["documents_in"].notna()
    shards["dropped"] = shards["dropped"].where(~known | shards["dropped"].notna(), 0)
    shards["unaccounted"] = (shards["documents_in"] - shards["rows"] - shards["dropped"]).where(known)
    for col in ("documents_in", "dropped", "unaccounted"):
        shards[col] = shards[col].astype("Int64")

    stage_inputs = shard_inputs.groupby(["stage", "dataset"])["documents_in"].sum().reset_index()
    synth_result = ctx.results.get("synthesize") or {}
    if any(d.stage == "synthesize" for d in datasets) and "synthesize" not in set(stage_inputs["stage"]):
        attempted = _first_int(synth_result, ("attempted",)) if isinstance(synth_result, dict) else None
        if attempted is not None:  # no chunk files (every chunk failed): the stage's own count
            mix_stage = [
                *mix_stage,
                {"stage": "synthesize", "dataset": "midtrain", "documents_in": attempted},
            ]
    stages = _stage_table(datasets, shards, drops, stage_inputs.to_dict("records") + mix_stage)
    top_domains, shard_domains = _top_domains(scanned["domains"])
    steps, step_ranks = _steps(ctx)
    version = pd.DataFrame([_version_row(ctx, scanned, version_id, parent)])
    return {
        "version": version,
        "stages": stages,
        "shards": shards,
        "drops": drops,
        "languages": scanned["languages"],
        "histograms": scanned["histograms"],
        "scores": scanned["scores"],
        "domains": top_domains,
        "shard_domains": shard_domains,
        "tiers": tiers,
        "tier_shards": scanned["tier_shards"],
        "synthetic": synthetic,
        "events": events,
        "categories": scanned["categories"],
        "steps": steps,
        "step_ranks": step_ranks,
    }


def _stage_table(
    datasets: list[Dataset], shards: pd.DataFrame, drops: pd.DataFrame, stage_inputs: list[dict]
) -> pd.DataFrame:
    rows = []
    extra = {(r["stage"], r["dataset"]): r["documents_in"] for r in stage_inputs}
    for ds in datasets:
        part = shards[(shards["stage"] == ds.stage) & (shards["dataset"] == ds.dataset)]
        dropped = drops[(drops["stage"] == ds.stage) & (drops["dataset"] == ds.dataset)]["documents"].sum()
        documents_in = extra.get((ds.stage, ds.dataset))
        documents_in = int(documents_in) if documents_in is not None else None
        documents_out = int(part["documents"].sum())
        rows.append(
            {
                "stage": ds.stage,
                "dataset": ds.dataset,
                "location": ds.location,
                "shards": len(part),
                "rows": int(part["rows"].sum()),
                "documents": documents_out,
                "file_bytes": int(part["file_bytes"].sum()),
                "text_bytes": int(part["text_bytes"].sum()),
                "tokens": int(part["tokens"].sum()),
                "document_tokens": int(part["document_tokens"].sum()),
                "documents_in": documents_in,
                "dropped": int(dropped),
                "unaccounted": documents_in - documents_out - int(dropped)
                if documents_in is not None
                else None,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "stage",
            "dataset",
            "location",
            "shards",
            *SIZE_COLUMNS,
            "documents_in",
            "dropped",
            "unaccounted",
        ],
    )
    for col in ("documents_in", "unaccounted"):
        frame[col] = frame[col].astype("Int64")
    return frame


def _version_row(
    ctx: RunContext, scanned: dict[str, pd.DataFrame], version_id: str | None, parent: str | None
) -> dict[str, Any]:
    from pipelines.graph import config_hash

    classifier_versions = sorted(_classifier_versions(ctx))
    return {
        "version": version_id,
        "parent": parent,
        "run_id": ctx.run_id,
        "mode": getattr(ctx, "mode", "full"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_hash": config_hash(ctx.config),
        "profiles": ",".join(ctx.config.profile),
        "classifier_version": ",".join(classifier_versions) or None,
        "inputs": ",".join(ctx.config.input),
    }


def _classifier_versions(ctx: RunContext) -> set[str]:
    versions: set[str] = set()
    for ds in run_datasets(ctx):
        for path in ds.files()[:50]:
            schema = pq.read_schema(path)
            if "classifier_version" in schema.names:
                column = pq.read_table(path, columns=["classifier_version"]).column(0)
                versions |= {v for v in column.unique().to_pylist() if v}
        if versions:
            break
    return versions


# -- reading and writing ------------------------------------------------------------------------------------
def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Write each table as `<folder>/<name>.parquet`, atomically (temp file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        table = table.replace_schema_metadata({b"prosocial_corpus.stats": name.encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        final = folder / f"{name}.parquet"
        write_bytes_atomic(final, buffer.getvalue())
        written.append(final)
    return written


def primary_dataset(tables: dict[str, pd.DataFrame]) -> str | None:
    """The dataset the summary and most plots describe: `pretrain` (the primary profile's mixture), else the
    first mixture, else the last stage's output (a version published without a mix)."""
    stages = tables["stages"]
    mix = stages[stages["stage"] == "mix"]["dataset"].tolist()
    if "pretrain" in mix:
        return "pretrain"
    return mix[0] if mix else (stages["dataset"].iloc[-1] if len(stages) else None)


# A refresh curates and deduplicates only the inputs it has not seen: in its version these stages count that
# run's new inputs, while the mixture is rebuilt from every kept document.
PER_RUN_STAGES = ("curate", "dedup")
NEW_INPUTS = "this run's new inputs"  # how the summary and the card label those stages


def is_refresh(tables: dict[str, pd.DataFrame]) -> bool:
    """Whether these are the stats of a version published by `corpus refresh` (the version table's `mode`)."""
    version = tables.get("version")
    if version is None or not len(version) or "mode" not in version:
        return False
    return str(version["mode"].iloc[0]) == "refresh"


def label_per_run_stages(tables: dict[str, pd.DataFrame], mark: str) -> tuple[pd.DataFrame, str | None]:
    """The stages table with a refresh's curate and dedup rows marked (`curate` + `mark`), and the sentence that
    explains the mark (None, and the table as it is, for a full run).

    Why: a refresh's curate and dedup saw only its new inputs; unlabelled, 'curate 5 rows' next to 'mix 94 rows'
    reads as the corpus losing documents. The CLI, the card and the HTML report label them the same way.
    """
    stages = tables["stages"]
    if not is_refresh(tables) or not len(stages) or not stages["stage"].isin(PER_RUN_STAGES).any():
        return stages, None
    labelled = stages.copy()
    labelled["stage"] = [f"{s}{mark}" if s in PER_RUN_STAGES else s for s in labelled["stage"]]
    return labelled, (
        f"{' and '.join(PER_RUN_STAGES)} count {NEW_INPUTS} only: this version was published by `corpus refresh`, "
        "which curates and deduplicates the inputs no earlier version had seen, while the mixture is rebuilt from "
        "every document kept so far (the mix's `documents_in` counts the whole corpus)"
    )


def require(
    tables: dict[str, pd.DataFrame], names: tuple[str, ...] | list[str], folder: Path | None = None
) -> None:
    """StatsError naming the missing `stats/<name>.parquet` files (a version damaged or copied in part).

    `folder` is the version folder; without it, the one `load` recorded in the version table (if any)."""
    missing = [name for name in names if name not in tables]
    if missing:
        version = tables.get("version")
        if folder is None and version is not None and len(version) and "path" in version:
            folder = Path(str(version["path"].iloc[0]))
        where = Path(folder) / STATS_DIR if folder is not None else Path(STATS_DIR)
        raise StatsError(
            f"{', '.join(str(where / f'{name}.parquet') for name in missing)} missing "
            f"(have: {', '.join(sorted(tables))}; `corpus verify` checks the version against its manifest)"
        )


def write_stats(ctx: RunContext, version_id: str) -> dict[str, Any]:
    """Build and write the stats of this run into the staged version (`<staging>/stats/`).

    Called by `publish_run` before the manifest is written. Returns a small summary for the run results.
    """
    from pipelines.publish.publish import latest_version

    parent = latest_version(ctx.out)
    tables = build_tables(ctx, version_id=version_id, parent=parent)
    write_tables(tables, ctx.staging / STATS_DIR)
    stages = tables["stages"]
    return {
        "tables": sorted(tables),
        "rows": {f"{r.stage}/{r.dataset}": int(r.rows) for r in stages.itertuples()},
        "unaccounted": {
            f"{r.stage}/{r.dataset}": int(r.unaccounted)
            for r in stages.itertuples()
            if pd.notna(r.unaccounted) and int(r.unaccounted) != 0
        },
    }


def resolve_version(path: str | os.PathLike, version: str | None = None) -> Path:
    """A version folder from a version folder, `OUT` (its `latest`, or `version` by id) or `OUT/latest`."""
    path = Path(path)
    if version is not None:
        candidate = path / "versions" / version
        if not candidate.is_dir():
            raise StatsError(f"{path}: no published version '{version}' (looked for {candidate})")
        return candidate
    if (path / STATS_DIR).is_dir() or (path / "manifest.json").is_file():
        return path
    latest = path / "latest"
    dangling = dangling_latest(path)
    if dangling:  # never fall back to the newest folder left: that would show an older version as current
        raise StatsError(f"{dangling} (pass --version, or point latest at a published version)")
    if latest.exists():
        return latest.resolve()
    versions = sorted((path / "versions").glob("v*")) if (path / "versions").is_dir() else []
    if versions:
        return max(versions, key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1)
    raise StatsError(
        f"{path}: neither a version folder (with stats/) nor an output root with versions/ or latest"
    )


_NULLABLE_INTS = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def load(path: str | os.PathLike, version: str | None = None) -> dict[str, pd.DataFrame]:
    """The stats tables of a version as named pandas DataFrames.

    `path` is a version folder, or an output root `OUT` (then `latest`, or `version` by id).
    """
    folder = resolve_version(path, version) / STATS_DIR
    if not folder.is_dir():
        raise StatsError(
            f"{folder.parent}: this version has no {STATS_DIR}/ folder (published before stats existed?)"
        )
    tables = {}
    for file in sorted(folder.glob("*.parquet")):
        if file.name.startswith("."):
            continue
        try:
            # integer columns with gaps (documents_in of the mixture, ...) stay integers, not floats
            tables[file.stem] = pq.read_table(file).to_pandas(types_mapper=_NULLABLE_INTS.get)
        except Exception as exc:  # a corrupt table names its file
            raise StatsError(f"{file}: unreadable stats table ({exc})") from None
    if not tables:
        raise StatsError(f"{folder}: no stats tables")
    if "version" in tables:
        tables["version"]["path"] = str(folder.parent)
    return tables
