"""From recipes to per-dimension train / calibration / evaluation examples.

What the README of the seeds warns about, and how it is handled here:
- Texts repeat across splits: every text is normalised first, and a text that is in any evaluation split
  (of any source) is removed from training and calibration; calibration texts are removed from training.
  "The same text" means the same words (`overlap_key`): retweets, reposts and edits that differ only in
  punctuation, emoji or a `#` were 1-2 % of some evaluation sets (GoEmotions 91 of 5,419 texts, Davidson 81 of
  4,888) and reached training when only exact copies were removed.
  Duplicates inside a split are merged (their targets averaged, so conflicting labels become soft).
- "Neutral" is not positive: recipes give such rows a 0.5 target (see recipes.py); they are never positives.
- Domains differ: a per-source cap keeps one big source (GoEmotions, Davidson) from defining a dimension,
  and evaluation is per source plus leave-one-source-out (evaluate.py).
- Class balance: the minority side of each dimension is repeated (deterministically) towards parity.

Splits are deterministic: a source's official evaluation split when the recipe names one, otherwise a 20 %
carve by a hash of the normalised text; 10 % of the remaining rows (by the same hash) calibrate.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifiers.normalize import normalize
from classifiers.recipes import Recipe, label_source, load_source

EVAL_FRACTION = 0.2
CALIB_FRACTION = 0.1
_WORDS = re.compile(r"[^\W_]+")


def text_hash(normalized: str) -> str:
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()


def overlap_key(normalized: str) -> str:
    """What two texts must share to count as one across splits: their words (letters and digits), in order.

    A text without any word (emoji only) is its own key, so emoji-only texts do not all collide.
    """
    return " ".join(_WORDS.findall(normalized)) or normalized


def _unit(digest: str) -> float:
    """A deterministic number in [0, 1) from a hex digest (the split coordinate of a text)."""
    return int(digest[:12], 16) / float(1 << 48)


@dataclass
class Example:
    text: str  # normalised
    target: float
    source: str
    also: tuple[str, ...] = ()  # other sources of a merged duplicate: leave-one-source-out excludes them too


@dataclass
class DimensionData:
    """One dimension's examples per role. `eval` is keyed by source (one evaluation set per source)."""

    train: list[Example] = field(default_factory=list)
    calib: list[Example] = field(default_factory=list)
    eval: dict[str, list[Example]] = field(default_factory=dict)


@dataclass
class SeedData:
    dimensions: dict[str, DimensionData]
    sources: list[Recipe]
    counts: dict[str, dict[str, int]]  # source -> {rows, eval, calib, train, dropped_eval_overlap, ...}


def calibration_as_eval(data: DimensionData) -> DimensionData:
    """The dimension with its calibration split, per source, in place of the evaluation sets.

    Why: choosing settings by their evaluation-split scores makes those scores optimistic. Tuning on the
    calibration split (held out from training too) keeps the evaluation split for the final report. The
    calibration is fitted on this split, and its length terms change the ranking, so AUC here is slightly
    optimistic (one or two fitted weights per dimension).
    """
    by_source: dict[str, list[Example]] = defaultdict(list)
    for e in data.calib:
        by_source[e.source].append(e)
    return DimensionData(train=data.train, calib=data.calib, eval=dict(sorted(by_source.items())))


def eval_texts_sha256(data: DimensionData) -> str:
    """Fingerprint of a dimension's evaluation texts: recorded at training, checked by `corpus classifier eval`
    to prove the bundle was trained around exactly these evaluation splits (never on them)."""
    texts = sorted({e.text for examples in data.eval.values() for e in examples})
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def _merge(examples: list[Example]) -> list[Example]:
    """Merge duplicates of a normalised text: average targets (conflicts become soft), keep the first source
    (and the others in `also`)."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.text, []).append(ex)
    merged = []
    for text, group in groups.items():
        target = float(np.mean([g.target for g in group]))
        others = tuple(sorted({g.source for g in group} - {group[0].source}))
        merged.append(Example(text, round(target, 4), group[0].source, others))
    return merged


def build_seed_data(recipes: list[Recipe], seeds: str | Path | None, log=print) -> SeedData:
    """Load every recipe's source, label, normalise, split and deduplicate."""
    per_role: dict[str, dict[str, list[Example]]] = defaultdict(
        lambda: defaultdict(list)
    )  # dim -> role -> ex
    eval_sets: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, dict[str, int]] = {}
    eval_keys: set[str] = set()  # overlap_key of every evaluation text
    staged: list[tuple[str, str, str, str, dict[str, float]]] = []  # (source, role, normalised, key, targets)
    for recipe in recipes:
        frames = load_source(recipe, seeds)
        rows = label_source(recipe, frames)
        official = set(recipe.eval_splits)
        unknown = official - set(frames)
        if unknown:
            raise ValueError(
                f"{recipe.path}: eval_split {sorted(unknown)} not among the splits {sorted(frames)}"
            )
        c = counts.setdefault(recipe.name, defaultdict(int))
        for index, raw in enumerate(rows.texts):
            norm = normalize(raw)
            if not norm:
                c["dropped_empty"] += 1
                continue
            u = _unit(text_hash(norm))
            if official:
                role = (
                    "eval" if rows.splits[index] in official else ("calib" if u < CALIB_FRACTION else "train")
                )
            else:
                role = (
                    "eval"
                    if u < EVAL_FRACTION
                    else ("calib" if u < EVAL_FRACTION + CALIB_FRACTION else "train")
                )
            targets = {d: t[index] for d, t in rows.targets.items() if not np.isnan(t[index])}
            key = overlap_key(norm)
            staged.append((recipe.name, role, norm, key, targets))
            if role == "eval":
                eval_keys.add(key)
            c["rows"] += 1
    calib_keys = {key for _, role, _, key, _ in staged if role == "calib" and key not in eval_keys}
    for source, role, norm, key, targets in staged:
        c = counts[source]
        if role != "eval" and key in eval_keys:
            c["dropped_eval_overlap"] += 1
            continue
        if role == "train" and key in calib_keys:
            c["dropped_calib_overlap"] += 1
            continue
        c[role] += 1
        for dim, target in targets.items():
            example = Example(norm, target, source)
            if role == "eval":
                eval_sets[dim][source].append(example)
            else:
                per_role[dim][role].append(example)
    dims: dict[str, DimensionData] = {}
    for dim in sorted(set(per_role) | set(eval_sets)):
        data = DimensionData(
            train=_merge(per_role[dim]["train"]),
            calib=_merge(per_role[dim]["calib"]),
            eval={},
        )
        for source, examples in sorted(eval_sets[dim].items()):
            # an evaluation text with conflicting labels inside one source says nothing: drop it
            targets: dict[str, set[float]] = defaultdict(set)
            for ex in examples:
                targets[ex.text].add(ex.target)
            merged = [ex for ex in _merge(examples) if len(targets[ex.text]) == 1]
            data.eval[source] = merged
        dims[dim] = data
    for source, c in counts.items():
        log(f"  {source}: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items())))
    return SeedData(dimensions=dims, sources=recipes, counts={k: dict(v) for k, v in counts.items()})


def balance(
    examples: list[Example], max_per_source: int, max_repeat: float, seed: int, min_per_source: int = 0
) -> list[Example]:
    """Even out sources, then repeat the minority class towards equal positive and negative mass.

    Sources larger than `max_per_source` are subsampled; smaller than `min_per_source` are repeated (at most
    `max_repeat` times), so a 2,000-row source still shapes the model next to a 40,000-row one: evaluation
    and users' pages weigh sources equally, not by how many rows happened to be labelled.
    Deterministic: examples are ordered by text hash before sampling, so input order does not matter.
    """
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[Example]] = defaultdict(list)
    for ex in sorted(examples, key=lambda e: text_hash(e.text)):
        by_source[ex.source].append(ex)
    capped: list[Example] = []
    for source in sorted(by_source):
        group = by_source[source]
        if len(group) > max_per_source:
            keep = np.sort(rng.choice(len(group), size=max_per_source, replace=False))
            group = [group[i] for i in keep]
        elif len(group) < min_per_source:
            factor = min(min_per_source / len(group), max_repeat)
            extra = int(round((factor - 1.0) * len(group)))
            group = group * int(factor) + [
                group[i] for i in np.sort(rng.choice(len(group), extra % len(group), replace=False))
            ]
        capped.extend(group)
    pos = sum(e.target for e in capped)
    neg = sum(1.0 - e.target for e in capped)
    if pos <= 0 or neg <= 0:
        return capped
    minority_is_pos = pos < neg
    ratio = min(max(pos, neg) / min(pos, neg), max_repeat)
    out: list[Example] = []
    for ex in capped:
        on_minority = ex.target > 0.5 if minority_is_pos else ex.target < 0.5
        copies = 1
        if on_minority:
            copies = int(ratio) + (1 if rng.random() < ratio - int(ratio) else 0)
        out.extend([ex] * copies)
    return out
