"""Per-partition maths of the mix: profile scores, tiers, copies per document and their stream positions.

Everything here is a pure function of one pandas partition plus a small plan, so that Dask can run it on any
worker in any order and the output is still byte-identical for the same seed:

* a document's tier comes from the profile's aggregate of its `ps_*` columns (no re-scoring);
* its copies are floor(g) plus one more when its seeded hash falls below the tier's token-weighted
  threshold, so a tier's token total matches the solved factor g (see `solver.py`), capped at max_epochs;
* copy k of a document with c copies sits at stream position (k + v) / c, with v its seeded hash in [0, 1):
  copies are evenly spaced over the whole mixture, and each copy alone is uniformly placed (a shuffle).
  Shard j holds positions [j/S, (j+1)/S), so copies land in different shards whenever S >= c.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from classifiers.profiles import Profile

HIST_BITS = 14  # token histogram resolution of the fractional-copy choice: 16384 bins per tier
HIST_BINS = 1 << HIST_BITS
SCORE_BINS = 1 << 16  # resolution of quantile tiers over the profile score in [0, 1]
SHIFT_32 = np.uint64(32)


def hash_key(seed: int, purpose: str) -> str:
    """A 16-character key for pandas' SipHash, derived from the seed and what the hash is for."""
    return hashlib.sha256(f"prosocial-mix/{purpose}/{seed}".encode()).hexdigest()[:16]


def seeded_hash(ids: pd.Series, seed: int, purpose: str) -> np.ndarray:
    """uint64 hash of each id; stable across processes and partitions (unlike Python's `hash`)."""
    values = ids.to_numpy(dtype=object, na_value="")
    return pd.util.hash_array(values, hash_key=hash_key(seed, purpose), categorize=False)


def profile_aggregate(df: pd.DataFrame, profile: Profile) -> np.ndarray:
    """The profile's `prosocial` (float32) of each row; NaN where a weighted score is missing."""
    scores = {d: df[f"ps_{d}"].to_numpy(dtype=np.float64, na_value=np.nan) for d in profile.dimensions}
    return profile.aggregate(scores) if len(df) else np.zeros(0, dtype=np.float32)


def profile_scores(df: pd.DataFrame, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """(prosocial float32, tier index int16) of each row under `profile`; len(tiers) = below every tier."""
    prosocial = profile_aggregate(df, profile)
    return prosocial, profile.tier_of(np.nan_to_num(prosocial, nan=-1.0))


def score_histograms(df: pd.DataFrame, profiles: list[Profile]) -> dict[str, dict[str, np.ndarray]]:
    """Per profile, {"scores": documents per score bin} (SCORE_BINS equal bins over [0, 1]), for quantile
    tiers; the same nesting as `partition_stats`, so `merge_stats` sums both."""
    out = {}
    for profile in profiles:
        prosocial = profile_aggregate(df, profile)
        prosocial = prosocial[~np.isnan(prosocial)].astype(np.float64)
        bins = np.clip((prosocial * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
        out[profile.name] = {"scores": np.bincount(bins, minlength=SCORE_BINS).astype(np.float64)}
    return out


def quantile_score(hist: np.ndarray, q: float) -> float:
    """The bin edge that leaves closest to a fraction q of the documents below it (documents scoring at or
    above it are the top 1 - q). Edges are multiples of 2**-16, exact in float32, so `tier_of`'s >= agrees
    with the histogram."""
    before = np.concatenate([[0.0], np.cumsum(hist)])
    j = int(np.argmin(np.abs(before - q * before[-1])))
    return j / SCORE_BINS


def partition_stats(df: pd.DataFrame, profiles: list[Profile], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per profile: documents and tokens per tier (last slot: below every tier), and per tier the token
    histogram over the extra-copy hash, which `extra_thresholds` turns into exact token targets."""
    tokens = df["token_count"].to_numpy(dtype=np.float64, na_value=0.0)
    bins = (seeded_hash(df["id"], seed, "extra") >> np.uint64(64 - HIST_BITS)).astype(np.int64)
    out = {}
    for profile in profiles:
        _, tier = profile_scores(df, profile)
        n = len(profile.tiers)
        hist = np.zeros((n, HIST_BINS), dtype=np.float64)
        for t in range(n):
            mask = tier == t
            if mask.any():
                hist[t] = np.bincount(bins[mask], weights=tokens[mask], minlength=HIST_BINS)
        out[profile.name] = {
            "documents": np.bincount(tier, minlength=n + 1).astype(np.float64),
            # bincount of an empty partition (a shard dedup emptied) is int64 even with weights: merging a float
            # partition into it failed
            "tokens": np.bincount(tier, weights=tokens, minlength=n + 1).astype(np.float64),
            "hist": hist,
        }
    return out


def merge_stats(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    parts = [p for p in parts if p]
    if not parts:
        return {}
    total = {name: {k: v.copy() for k, v in stats.items()} for name, stats in parts[0].items()}
    for part in parts[1:]:
        for name, stats in part.items():
            for key, value in stats.items():
                total[name][key] += value
    return total


def extra_thresholds(hist: np.ndarray, factors: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per tier: the hash bin below which a document gets its extra copy, and the extra tokens that gives.

    The threshold is the bin edge whose cumulative token count is closest to frac(g) * tier tokens, so the
    realised tier total is off the solved one by at most half a bin (1/16384 of the tier, for large tiers).
    """
    thresholds = np.zeros(len(factors), dtype=np.int64)
    extra = np.zeros(len(factors), dtype=np.float64)
    for t, g in enumerate(factors):
        frac = g - np.floor(g)
        if frac <= 0:
            continue
        before = np.concatenate([[0.0], np.cumsum(hist[t])])  # tokens in bins < j, for j = 0..BINS
        target = frac * before[-1]
        j = int(np.argmin(np.abs(before - target)))
        thresholds[t], extra[t] = j, before[j]
    return thresholds, extra


@dataclass(frozen=True)
class CopyPlan:
    """What one partition needs to lay out the copies of one profile."""

    profile: Profile
    factors: tuple[float, ...]  # solved g per tier
    thresholds: tuple[int, ...]  # extra-copy bin threshold per tier
    max_epochs: int
    seed: int
    shards: int


def explode(df: pd.DataFrame, plan: CopyPlan) -> pd.DataFrame:
    """The copies of each row: input columns (prosocial recomputed for the profile) plus `tier`,
    `repeat_index` (int16), `_shard` (int64) and `_pos` (float64 stream position inside the mixture)."""
    prosocial, tier = profile_scores(df, plan.profile)
    n_tiers = len(plan.profile.tiers)
    floor = np.array([np.floor(g) for g in plan.factors] + [0.0], dtype=np.int64)
    thresholds = np.array(list(plan.thresholds) + [0], dtype=np.int64)
    bins = (seeded_hash(df["id"], plan.seed, "extra") >> np.uint64(64 - HIST_BITS)).astype(np.int64)
    copies = floor[tier] + (bins < thresholds[tier])
    copies = np.minimum(copies, plan.max_epochs).astype(np.int64)
    copies[tier == n_tiers] = 0

    rows = np.repeat(np.arange(len(df)), copies)
    starts = np.cumsum(copies) - copies
    repeat_index = np.arange(len(rows), dtype=np.int64) - np.repeat(starts, copies)
    c = copies[rows]
    v = (seeded_hash(df["id"], plan.seed, "order") >> SHIFT_32).astype(np.int64)[rows]
    numerator = (repeat_index << 32) + v  # position = numerator / (c << 32), in [0, 1)
    shard = numerator * plan.shards // (c << 32)

    out = df.iloc[rows].reset_index(drop=True)
    out["prosocial"] = prosocial[rows]
    names = np.array([t.name for t in plan.profile.tiers] + [""], dtype=object)
    out["tier"] = pd.array(names[tier[rows]], dtype="string[pyarrow]")
    out["repeat_index"] = repeat_index.astype(np.int16)
    out["_shard"] = shard.astype(np.int64)
    out["_pos"] = numerator / (c.astype(np.float64) * 2.0**32) if len(rows) else np.zeros(0)
    return out
