"""The mix stage: profile tiers and capped upsampling into shuffled Parquet shards, on Dask DataFrame.

Two passes over the scored (deduplicated) corpus, both out of core (three when a profile gives tiers as
quantiles: pass 0 histograms the profile score and resolves each `min_quantile` to a `min_score`):

1. **stats** (columns id, token_count, ps_* only): per profile and tier, documents, tokens and a token
   histogram over a seeded hash. The solver (`solver.py`) turns tier tokens, the profile's factors, the epoch
   cap and the optional token budget / top-tier share into one real factor per tier; the histogram turns
   each factor's fractional part into an exact token target.
2. **materialise**, per profile: every partition lays out the copies of its rows (`copies.explode`), a Dask
   shuffle (`set_index` on the shard number, known divisions, so no sort pass) groups rows by output shard,
   and one task per shard sorts by stream position and writes `train-XXXXX-of-YYYYY.parquet` atomically.

The result is byte-identical for the same inputs, profiles and seed, whatever the partitioning and worker
count. The primary profile writes `<staging>/pretrain/`, others `<staging>/pretrain_<name>/`, and
`<staging>/mixture.json` describes every tier (documents, tokens, factor, effective epochs, blend weight).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.utils.logging import logger

from classifiers.profiles import Profile, load_profile
from pipelines.atomic import commit_dir, write_json_atomic
from pipelines.cluster import scheduler_lost_as_cluster_lost
from pipelines.mix.copies import (
    CopyPlan,
    explode,
    extra_thresholds,
    merge_stats,
    partition_stats,
    quantile_score,
    score_histograms,
)
from pipelines.mix.settings import MixConfig
from pipelines.mix.solver import solve_factors
from pipelines.parquet import parquet_paths, write_table_atomic

if TYPE_CHECKING:
    from distributed import Client

    from pipelines.context import RunContext

MIXTURE_FORMAT = 1
MIXTURE_SCHEMA = "mixture/1"  # Parquet schema metadata of the shards
# P2P shuffles log every start/stop at WARNING on the scheduler; they are routine here.
logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
HELPER_COLUMNS = ["_shard", "_pos"]


class MixError(ValueError):
    """Inputs or profiles the mix cannot use; the message names the file, profile or key."""


# -- inputs -------------------------------------------------------------------------------------------------
def read_scored(files: list[Path], cfg: MixConfig, columns: list[str] | None = None) -> dd.DataFrame:
    """The scored files as one Dask DataFrame. Dask expands each path as a glob pattern, so the paths are
    escaped: OUT=/data/out[v2] must not be read as "out" followed by one of the characters v, 2."""
    return dd.read_parquet([glob.escape(str(f)) for f in files], columns=columns, blocksize=cfg.blocksize)


def list_inputs(inputs: str | Path | list[str | Path]) -> list[Path]:
    """Complete `*.parquet` files of the given folders/files, sorted (temp files start with '.')."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += parquet_paths(path)
        elif path.is_file():
            files.append(path)
        else:
            raise MixError(f"{path}: scored Parquet input not found")
    return files


def input_schema(files: list[Path], profiles: list[Profile]) -> pa.Schema:
    needed = {"id", "token_count"} | {f"ps_{d}" for p in profiles for d in p.dimensions}
    schemas = []
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MixError(
                f"{path}: not a readable Parquet file ({exc}); if it is a kept shard under OUT/state/shards, "
                "`corpus run` rebuilds them"
            ) from None
        missing = sorted(needed - set(schema.names))
        if missing:
            owners = [p.name for p in profiles if any(f"ps_{d}" in missing for d in p.dimensions)]
            raise MixError(
                f"{path}: missing column(s) {missing}"
                + (f" needed by profile(s) {owners}" if owners else "")
                + "; expected the scored-document schema"
            )
        schemas.append(schema)
    try:
        schema = pa.unify_schemas(schemas)
    except pa.ArrowInvalid as exc:
        raise MixError(f"{files[0].parent}: scored files disagree on column types ({exc})") from None
    fields = [f for f in schema if f.name not in ("tier", "repeat_index", *HELPER_COLUMNS)]
    if "prosocial" not in schema.names:
        fields.append(pa.field("prosocial", pa.float32()))
    return pa.schema(
        [
            *fields,
            pa.field("tier", pa.string(), metadata={b"description": b"profile tier of the document"}),
            pa.field("repeat_index", pa.int16(), metadata={b"description": b"copy number, 0 .. copies-1"}),
        ],
        metadata={b"prosocial_corpus.schema": MIXTURE_SCHEMA.encode()},
    )


def load_profiles(names: list[str | Profile]) -> list[Profile]:
    """Profiles by name or YAML path (Profile objects pass through); names must be unique (folder names)."""
    profiles = [name if isinstance(name, Profile) else load_profile(name) for name in names]
    if not profiles:
        raise MixError("profile: at least one profile is needed")
    seen: dict[str, str] = {}
    for name, profile in zip(names, profiles, strict=True):
        label = name.name if isinstance(name, Profile) else name
        if profile.name in seen:
            raise MixError(f"profile: '{label}' and '{seen[profile.name]}' are both named '{profile.name}'")
        seen[profile.name] = label
    return profiles


def _fingerprint(files: list[Path], cfg: MixConfig, profiles: list[Profile]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.resolve()}\0{path.stat().st_size}\0{path.stat().st_mtime_ns}\n".encode())
    digest.update(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode())
    for profile in profiles:
        digest.update(json.dumps(profile.model_dump(mode="json"), sort_keys=True).encode())
    return digest.hexdigest()[:16]


# -- pass 0 (only for quantile tiers): score histograms -----------------------------------------------------
def resolve_quantile_tiers(
    files: list[Path], profiles: list[Profile], cfg: MixConfig, client: Client | None
) -> list[Profile]:
    """Profiles with their `min_quantile` tiers resolved to scores over these documents (others unchanged)."""
    pending = [p for p in profiles if p.has_quantiles]
    if not pending:
        return profiles
    columns = ["id", *sorted({f"ps_{d}" for p in pending for d in p.dimensions})]
    ddf = read_scored(files, cfg, columns)
    histogram = dask.delayed(score_histograms, pure=True)
    merged = _tree_merge([histogram(part, pending) for part in ddf.to_delayed()])
    with scheduler_lost_as_cluster_lost(client, "mix"):
        hists = client.compute(merged).result() if client is not None else merged.compute()
    resolved = []
    for profile in profiles:
        if profile.has_quantiles:
            profile = profile.resolve_quantiles(
                lambda q, h=hists[profile.name]["scores"]: quantile_score(h, q)
            )
            logger.info(
                f"mix: profile {profile.name}: quantile tiers resolved to "
                + ", ".join(
                    f"{t.name} >= {t.min_score:.4f} (q{t.min_quantile:g})"
                    for t in profile.tiers
                    if t.min_quantile is not None
                )
            )
        resolved.append(profile)
    return resolved


# -- pass 1: stats -----------------------------------------------------------------------------------------
def _tree_merge(parts: list[Any], fan_in: int = 8) -> Any:
    merge = dask.delayed(merge_stats, pure=True)
    while len(parts) > 1:
        parts = [merge(parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def collect_stats(files: list[Path], profiles: list[Profile], cfg: MixConfig, client: Client | None) -> dict:
    columns = ["id", "token_count", *sorted({f"ps_{d}" for p in profiles for d in p.dimensions})]
    ddf = read_scored(files, cfg, columns)
    stats = dask.delayed(partition_stats, pure=True)
    parts = [stats(part, profiles, cfg.seed) for part in ddf.to_delayed()]
    merged = _tree_merge(parts)
    with scheduler_lost_as_cluster_lost(client, "mix"):
        return client.compute(merged).result() if client is not None else merged.compute()


# -- pass 2: materialise -----------------------------------------------------------------------------------
def _repeats_of_previous(df: pd.DataFrame) -> np.ndarray:
    """Rows whose (id, repeat_index, _pos) equal the previous row's, in Arrow (no per-shard hash table); two
    nulls are equal, as for pandas' `duplicated` (an outside table may lack ids)."""
    if len(df) < 2:
        return np.zeros(len(df), dtype=bool)
    same = None
    for column in ("id", "repeat_index", "_pos"):
        values = pa.array(df[column])
        after, before = values[1:], values[:-1]
        both_null = pc.and_(pc.is_null(after), pc.is_null(before))
        equal = pc.or_(pc.fill_null(pc.equal(after, before), False), both_null)
        same = equal if same is None else pc.and_(same, equal)
    return np.concatenate([[False], same.to_numpy(zero_copy_only=False).astype(bool)])


def write_shard(
    df: pd.DataFrame,
    index: int,
    shards: int,
    folder: str,
    schema: pa.Schema,
    row_group_rows: int,
    tier_names: list[str],
) -> dict[str, Any]:
    """Sort one shard by stream position (ties: id, copy) and write it atomically; return its tier counts.

    Rows that share an id (the same url and text curated twice: a refresh with `dedup.enabled: false`, or
    `curate.exact_dedup: false`) get the same copies at the same positions, so they meet here and only one of
    each (id, copy) is written: `max_epochs` caps copies of a document, not of a row. (Rows that share an id
    but not a tier, whose texts differ only in case or spacing, get other positions and are both written.)
    """
    df = df.reset_index(drop=True)  # the index is the shard number, also kept as a column
    keys = ["_pos", "id", "repeat_index"]
    df = df.sort_values(keys, kind="stable").reset_index(drop=True)
    repeats = _repeats_of_previous(df)  # same id and copy at the same position: sorted next to each other
    collapsed = int(repeats.sum())
    if collapsed:  # keep the copy from the first source (and offset): the same whatever the partitioning
        keys += [c for c in ("source", "source_offset", "text") if c in df.columns]
        df = df.sort_values(keys, kind="stable").reset_index(drop=True)
        df = df[~_repeats_of_previous(df)].reset_index(drop=True)
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(schema.metadata)  # drop pandas' metadata: same bytes on every run
    name = f"train-{index:05d}-of-{shards:05d}.parquet"
    write_table_atomic(table, os.path.join(folder, name), row_group_rows=row_group_rows)
    tokens = df["token_count"].to_numpy(dtype=np.float64, na_value=0.0)  # as partition_stats counts them
    counts = {}
    for tier in tier_names:
        mask = (df["tier"] == tier).to_numpy(dtype=bool)
        counts[tier] = {
            "rows": int(mask.sum()),
            "tokens": float(tokens[mask].sum()),
            "documents": int((mask & (df["repeat_index"].to_numpy() == 0)).sum()),
            "max_copies": int(df["repeat_index"].to_numpy()[mask].max() + 1) if mask.any() else 0,
        }
    return {
        "file": name,
        "rows": len(df),
        "bytes": os.path.getsize(os.path.join(folder, name)),
        "tiers": counts,
        "duplicate_copies": collapsed,
    }


def materialise(
    files: list[Path], plan: CopyPlan, schema: pa.Schema, folder: Path, cfg: MixConfig, client: Client | None
) -> list[dict[str, Any]]:
    """Write the plan's copies into `folder` (replaced atomically as a whole); return per-shard counts."""
    ddf = read_scored(files, cfg)
    meta = explode(ddf._meta, plan)
    exploded = ddf.map_partitions(explode, plan, meta=meta)
    divisions = list(range(plan.shards)) + [plan.shards - 1]
    by_shard = exploded.set_index("_shard", divisions=divisions, drop=False)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    write = dask.delayed(write_shard, pure=True)
    tier_names = [t.name for t in plan.profile.tiers]
    tasks = [
        write(part, i, plan.shards, str(tmp), schema, cfg.row_group_rows, tier_names)
        for i, part in enumerate(by_shard.to_delayed())
    ]
    try:
        with scheduler_lost_as_cluster_lost(client, "mix"):
            results = (
                client.gather(client.compute(tasks)) if client is not None else list(dask.compute(*tasks))
            )
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            commit_dir(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            commit_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return list(results)


# -- the stage ---------------------------------------------------------------------------------------------
def first_damaged(files: list[Path]) -> str | None:
    """'<file>: <error>' for the first input whose data cannot be read, or None (only run after a read failed:
    it reads every row group)."""
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.metadata.num_row_groups):
                parquet.read_row_group(group)
        except (OSError, pa.ArrowException) as exc:
            return (
                f"{path}: cannot be read ({exc}); if it is a kept shard under OUT/state/shards, `corpus run` "
                "rebuilds them"
            )
    return None


def uncompressed_bytes(files: list[Path]) -> int:
    total = 0
    for path in files:
        meta = pq.read_metadata(path)
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


def plan_profile(
    profile: Profile, stats: dict[str, np.ndarray], cfg: MixConfig, bytes_per_token: float
) -> tuple[CopyPlan, dict[str, Any]]:
    """Solve the factors of one profile and size its shards; return the plan and its mixture.json entry."""
    n = len(profile.tiers)
    tokens = stats["tokens"][:n].tolist()
    share = profile.top_tier_share if profile.top_tier_share is not None else cfg.top_tier_share
    solution = solve_factors(
        tokens, [t.factor for t in profile.tiers], cfg.max_epochs, cfg.token_budget, share
    )
    thresholds, extra = extra_thresholds(stats["hist"], solution.factors)
    realised = [math.floor(g) * t + e for g, t, e in zip(solution.factors, tokens, extra, strict=True)]
    est_bytes = sum(realised) * bytes_per_token
    shards = max(1, math.ceil(est_bytes / (cfg.shard_mb * 1e6)))
    documents = stats["documents"][:n]
    # fractional factors add copies too: a mixture of factors < 1 is not one row
    expected_rows = math.ceil(sum(g * d for g, d in zip(solution.factors, documents, strict=True)))
    most_copies = min(
        cfg.max_epochs,
        math.ceil(max((g for g, d in zip(solution.factors, documents, strict=True) if d), default=0)),
    )
    shards = max(shards, most_copies)  # copies of one document never share a file
    shards = max(1, min(shards, expected_rows or 1))
    plan = CopyPlan(
        profile, tuple(solution.factors), tuple(int(x) for x in thresholds), cfg.max_epochs, cfg.seed, shards
    )
    info = {
        "solver": {
            "feasible": solution.feasible,
            "notes": solution.notes,
            "token_budget": cfg.token_budget,
            "top_tier_share": share,
        },
        "target_tokens": solution.target_tokens,
        "target_shares": solution.shares,
    }
    return plan, info


def _profile_entry(
    profile: Profile,
    plan: CopyPlan,
    info: dict,
    stats: dict[str, np.ndarray],
    shards: list[dict],
    folder: str,
    primary: bool,
) -> dict[str, Any]:
    n = len(profile.tiers)
    total_tokens = sum(s["tiers"][t.name]["tokens"] for s in shards for t in profile.tiers)
    tiers = []
    for i, tier in enumerate(profile.tiers):
        rows = sum(s["tiers"][tier.name]["rows"] for s in shards)
        mixture_tokens = sum(s["tiers"][tier.name]["tokens"] for s in shards)
        documents, tokens = int(stats["documents"][i]), float(stats["tokens"][i])
        share = mixture_tokens / total_tokens if total_tokens else 0.0
        tiers.append(
            {
                "name": tier.name,
                "min_score": tier.min_score,
                "min_quantile": tier.min_quantile,
                "profile_factor": tier.factor,
                "factor": plan.factors[i],
                "documents": documents,
                "tokens": int(tokens),
                "documents_in_mixture": sum(s["tiers"][tier.name]["documents"] for s in shards),
                "rows": rows,
                "mixture_tokens": int(mixture_tokens),
                "effective_epochs": mixture_tokens / tokens if tokens else 0.0,
                "max_copies": max((s["tiers"][tier.name]["max_copies"] for s in shards), default=0),
                "target_tokens": info["target_tokens"][i],
                "target_share": info["target_shares"][i],
                "share": share,
                "blend_weight": share,
            }
        )
    blend = [t for t in tiers if t["blend_weight"] > 0]
    return {
        "folder": folder,
        "primary": primary,
        "profile": profile.model_dump(mode="json"),
        **info["solver"],
        "max_epochs": plan.max_epochs,
        "tiers": tiers,
        "below_all_tiers": {"documents": int(stats["documents"][n]), "tokens": int(stats["tokens"][n])},
        "totals": {
            "documents": int(stats["documents"].sum()),
            "tokens": int(stats["tokens"].sum()),
            "rows": sum(s["rows"] for s in shards),
            "mixture_tokens": int(total_tokens),
            "bytes": sum(s["bytes"] for s in shards),
            # copies of rows that share an id with another row, not written (see write_shard)
            "duplicate_copies_dropped": sum(s["duplicate_copies"] for s in shards),
        },
        "shards": len(shards),
        "files": [s["file"] for s in shards],
        "blend": {
            "weights": {t["name"]: t["blend_weight"] for t in blend},
            "epochs": {t["name"]: t["effective_epochs"] for t in blend},
            "note": "For weight-based loaders: sample tier NAME's unique documents (rows with tier == NAME and "
            "repeat_index == 0) with these weights; over mixture_tokens tokens that reproduces the same "
            "effective epochs without materialised repeats.",
        },
    }


def mix_scored(
    inputs: str | Path | list[str | Path],
    staging: str | Path,
    profiles: list[str | Profile],
    cfg: MixConfig,
    client: Client | None = None,
) -> dict[str, Any]:
    """Build one mixture per profile from scored Parquet `inputs` into `staging`; return a small summary.

    The refresh stage calls this with every kept scored shard (old and new) to re-mix. A rerun with the same
    inputs, profiles and settings finds `mixture.json` with the same fingerprint and returns at once.
    """
    staging = Path(staging)
    profiles = load_profiles(list(profiles))
    files = list_inputs(inputs)
    staging.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(files, cfg, profiles)
    mixture_path = staging / "mixture.json"
    if mixture_path.is_file():
        previous = json.loads(mixture_path.read_text())
        folders = [staging / entry["folder"] for entry in previous.get("profiles", {}).values()]
        if previous.get("fingerprint") == fingerprint and all(f.is_dir() for f in folders):
            logger.info(f"mix: {mixture_path} is up to date; skipping")
            return _summary(previous)
    if not files:
        raise MixError(f"{inputs}: no scored Parquet files to mix")
    schema = input_schema(files, profiles)
    try:  # a damaged data page surfaces here, inside Dask, as an error that names no file
        profiles = resolve_quantile_tiers(files, profiles, cfg, client)
        stats = collect_stats(files, profiles, cfg, client)
        total_rows = sum(pq.read_metadata(f).num_rows for f in files)
        total_tokens = float(stats[profiles[0].name]["tokens"].sum()) if stats else 0.0
        bytes_per_token = uncompressed_bytes(files) / total_tokens if total_tokens else 0.0
        entries = {}
        for index, profile in enumerate(profiles):
            folder = "pretrain" if index == 0 else f"pretrain_{profile.name}"
            plan, info = plan_profile(profile, stats[profile.name], cfg, bytes_per_token)
            if not info["solver"]["feasible"]:  # the mixture is still written, as close as the cap allows
                logger.warning(
                    f"mix: profile {profile.name}: the requested mixture cannot be met "
                    f"({'; '.join(info['solver']['notes']) or 'see mixture.json'}); tier factors "
                    f"{[round(g, 4) for g in plan.factors]}"
                )
            logger.info(
                f"mix: profile {profile.name}: factors {[round(g, 4) for g in plan.factors]}, "
                f"{plan.shards} shard(s) -> {staging / folder}"
            )
            shards = materialise(files, plan, schema, staging / folder, cfg, client)
            entries[profile.name] = _profile_entry(
                profile, plan, info, stats[profile.name], shards, folder, index == 0
            )
            if dropped := entries[profile.name]["totals"]["duplicate_copies_dropped"]:
                logger.warning(
                    f"mix: profile {profile.name}: {dropped} copies of documents whose id appears in more than one "
                    "input row were not written (max_epochs caps copies per document; rows share an id when "
                    "curate.exact_dedup or dedup.enabled is off)"
                )
    except (OSError, pa.ArrowException) as exc:
        damaged = first_damaged(files)
        if damaged is None:
            raise
        raise MixError(damaged) from exc
    mixture = {
        "format": MIXTURE_FORMAT,
        "fingerprint": fingerprint,
        "seed": cfg.seed,
        "max_epochs": cfg.max_epochs,
        "inputs": {"files": len(files), "documents": total_rows, "tokens": int(total_tokens)},
        "primary_profile": profiles[0].name,
        "profiles": entries,
    }
    write_json_atomic(mixture_path, mixture, indent=2)
    return _summary(mixture)


def _summary(mixture: dict[str, Any]) -> dict[str, Any]:
    return {
        "mixture": "mixture.json",
        "documents_in": mixture["inputs"]["documents"],
        "profiles": {
            name: {
                "primary": name == mixture["primary_profile"],  # the run summary's rows and tiers
                "folder": entry["folder"],
                "rows": entry["totals"]["rows"],
                "mixture_tokens": entry["totals"]["mixture_tokens"],
                "shards": entry["shards"],
                "feasible": entry["feasible"],
                "tiers": {
                    t["name"]: {"documents": t["documents"], "rows": t["rows"]} for t in entry["tiers"]
                },
            }
            for name, entry in mixture["profiles"].items()
        },
    }


def run_mix(ctx: RunContext) -> dict[str, Any]:
    """Mix the dedup stage's output (or curate's, when dedup is off) for every configured profile."""
    source = ctx.results.get("dedup") or ctx.results["curate"]
    return mix_scored(source["output_dir"], ctx.staging, list(ctx.config.profile), ctx.config.mix, ctx.client)
