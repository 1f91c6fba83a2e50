"""Profiles: user-authored weights and tiers over the value dimensions.

A profile turns per-dimension scores into one `prosocial` aggregate and into tiers with upsampling factors.
Several communities can build different mixtures from one scored corpus without re-scoring, because the
per-dimension `ps_*` columns are stored and the aggregate is recomputed per profile. The model lives in the
leaf package because the scoring step needs the aggregate; tiers are used by the mix stage.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from classifiers.yamlconfig import ConfigFileError, did_you_mean, load_model

PROFILE_DIRS = [Path("configs/profiles"), Path(__file__).resolve().parents[1] / "configs" / "profiles"]


class ProfileError(ConfigFileError):
    """A profile that cannot be found or does not validate; the message names the file and key."""


class Tier(BaseModel):
    """A score band. Its threshold is absolute (`min_score`) or relative to the corpus (`min_quantile`).

    Absolute thresholds are tied to one classifier bundle: a retrained bundle, or other kinds of input, shift
    the score distribution and silently move documents between tiers. A quantile ("the top 5 % of documents")
    keeps its meaning; the mix stage resolves it to a score over the documents it mixes and records both.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    min_score: float | None = Field(
        None, ge=0.0, le=1.0, description="Documents with prosocial >= min_score fall in this tier."
    )
    min_quantile: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Instead of min_score: the tier starts at this quantile of the profile's score over the "
        "documents being mixed (0.95: the top 5 %). Resolved per mix and recorded in mixture.json.",
    )
    factor: float = Field(
        ge=0.0, description="Upsampling factor (copies per document, before the epoch cap); 0 drops."
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> Tier:
        if (self.min_score is None) == (self.min_quantile is None):
            raise ValueError(f"tier '{self.name}': give exactly one of min_score and min_quantile")
        return self


@functools.lru_cache(maxsize=1)
def _taxonomy_dimensions() -> tuple[str, ...]:
    from classifiers.taxonomy import load_taxonomy

    return tuple(load_taxonomy().dimensions)


class Profile(BaseModel):
    # no NaN or inf: a NaN weight silently dropped its dimension
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    description: str = ""
    weights: dict[str, float] = Field(description="Weight per dimension; the aggregate is the weighted mean.")
    tiers: list[Tier] = Field(
        description="Highest threshold first; a document takes the first tier it reaches."
    )
    top_tier_share: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of mixture tokens the top tier should supply; the mix stage solves the factors for it "
        "(None: use the factors as written, or mix.top_tier_share).",
    )

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if not self.weights or sum(self.weights.values()) <= 0:
            raise ValueError("weights: need at least one positive weight")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("weights: must be >= 0")
        known = set(_taxonomy_dimensions())
        for name in self.weights:
            if name not in known:
                raise ValueError(
                    f"weights.{name}: not a dimension of the taxonomy{did_you_mean(name, known)}; "
                    f"known: {', '.join(sorted(known))}"
                )
        if not self.tiers:
            raise ValueError("tiers: need at least one tier")
        names = [t.name for t in self.tiers]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            # the mix counts rows, tokens and shares by tier name: two tiers of one name would be summed
            raise ValueError(f"tiers: names must be unique, {repeated} appear more than once")
        for key in ("min_score", "min_quantile"):
            thresholds = [getattr(t, key) for t in self.tiers if getattr(t, key) is not None]
            if thresholds != sorted(thresholds, reverse=True):
                raise ValueError(f"tiers: list them from the highest {key} to the lowest")
        return self

    @property
    def has_quantiles(self) -> bool:
        return any(t.min_quantile is not None for t in self.tiers)

    def resolve_quantiles(self, score_at: Callable[[float], float]) -> Profile:
        """This profile with every `min_quantile` turned into a `min_score` (kept alongside, for the record).

        `score_at(q)` is the score at quantile q of the documents being mixed. Fails when a resolved quantile
        crosses an absolute threshold listed around it, since the tiers would then overlap.
        """
        tiers = [
            t
            if t.min_quantile is None
            else t.model_copy(update={"min_score": float(score_at(t.min_quantile))})
            for t in self.tiers
        ]
        scores = [t.min_score for t in tiers]
        if scores != sorted(scores, reverse=True):
            listed = ", ".join(f"{t.name}={t.min_score:.4f}" for t in tiers)
            raise ProfileError(
                f"profile '{self.name}': tiers out of order once quantiles are resolved ({listed}); "
                "use quantiles for all tiers, or thresholds that cannot cross them"
            )
        return self.model_copy(update={"tiers": tiers})

    @property
    def dimensions(self) -> list[str]:
        return [d for d, w in self.weights.items() if w > 0]

    def aggregate(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """Weighted mean of the dimensions this profile weights; missing dimensions are an error, not 0."""
        missing = [d for d in self.dimensions if d not in scores]
        if missing:
            raise ProfileError(f"profile '{self.name}' weights dimensions the scores lack: {missing}")
        total = sum(self.weights[d] for d in self.dimensions)
        out = sum(np.asarray(scores[d], dtype=np.float64) * self.weights[d] for d in self.dimensions) / total
        return np.asarray(out, dtype=np.float32)

    def tier_of(self, prosocial: np.ndarray) -> np.ndarray:
        """Index into `tiers` for each score; len(tiers) means below every tier (dropped)."""
        if self.has_quantiles and any(t.min_score is None for t in self.tiers):
            raise ProfileError(f"profile '{self.name}': resolve its quantile tiers first (resolve_quantiles)")
        prosocial = np.asarray(prosocial)
        out = np.full(prosocial.shape, len(self.tiers), dtype=np.int16)
        for index in range(len(self.tiers) - 1, -1, -1):
            out[prosocial >= self.tiers[index].min_score] = index
        return out


def resolve_profile_path(name_or_path: str) -> Path:
    """A YAML path, or a name looked up in ./configs/profiles then the repository's configs/profiles."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.parent != Path("."):
        if candidate.is_file():
            return candidate
        raise ProfileError(f"profile file not found: {candidate}")
    for folder in PROFILE_DIRS:
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for folder in PROFILE_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})
    raise ProfileError(f"unknown profile '{name_or_path}' (known: {', '.join(known) or 'none'})")


def load_profile(name_or_path: str) -> Profile:
    path = resolve_profile_path(name_or_path)
    return load_model(path, Profile, ProfileError, defaults={"name": path.stem})
