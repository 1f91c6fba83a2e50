"""Evaluation: the bundle against two baselines on the same splits, leave-one-source-out, throughput, and
the long-document aggregation experiment.

Every number here is measured on evaluation splits no model was trained on (dataset.py removes their texts
from training and calibration). Sets are per dimension and per source; a source whose evaluation split has
negatives and neutral rows but no positives (Davidson, TweetEval hate/offensive, ToxiGen) is scored as
"neutral ranks above negative".
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.bundle import Bundle, aggregate
from classifiers.dataset import DimensionData, Example, SeedData
from classifiers.profiles import Profile
from classifiers.train import TrainParams, binary_metrics, pretrain_vectors, train_dimension

MIN_CLASS = 20  # an evaluation set needs at least this many rows of each class


def eval_sets(data: DimensionData) -> dict[str, list[Example]]:
    """The dimension's evaluation sets with enough rows of both classes to mean something."""
    out = {}
    for source, examples in data.eval.items():
        m = binary_metrics(np.zeros(len(examples)), np.array([e.target for e in examples]), 0.5)
        if m["n_pos"] >= MIN_CLASS and m["n_neg"] >= MIN_CLASS:
            out[source] = examples
    return out


def _texts(examples: list[Example]) -> list[str]:
    return [e.text for e in examples]


def _targets(examples: list[Example]) -> np.ndarray:
    return np.array([e.target for e in examples])


def cap_per_source(examples: list[Example], cap: int, seed: int = 0) -> list[Example]:
    """At most `cap` examples per source (a deterministic sample): bounds the MiniLM embedding cost."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[Example]] = {}
    for e in examples:
        by_source.setdefault(e.source, []).append(e)
    out = []
    for source in sorted(by_source):
        group = sorted(by_source[source], key=lambda e: e.text)
        if len(group) > cap:
            group = [group[i] for i in np.sort(rng.choice(len(group), cap, replace=False))]
        out.extend(group)
    return out


def _fasttext_scorer(bundle: Bundle, dim: str) -> Callable[[list[str]], np.ndarray]:
    return bundle.models[dim].score


def _threshold_f1(scores: np.ndarray, targets: np.ndarray) -> float:
    from classifiers.train import best_f1_threshold

    return best_f1_threshold(scores, targets)


def _fit_baseline(factory: dict[str, Any], data: DimensionData) -> tuple[Any, float]:
    """A baseline fitted on `data.train`, and its F1 threshold chosen on `data.calib` as fastText's is."""
    train = factory["train_rows"](data.train)
    model = factory["make"]().fit(_texts(train), _targets(train))
    threshold = _threshold_f1(model.predict(_texts(data.calib)), _targets(data.calib)) if data.calib else 0.5
    return model, threshold


def evaluate_dimension(
    dim: str,
    data: DimensionData,
    bundle: Bundle,
    baselines: dict[str, Any],
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {set: metrics}} for the bundle's model and each baseline (fitted here on the same train split)."""
    sets = eval_sets(data)
    results: dict[str, dict[str, dict[str, float]]] = {}
    scorers: dict[str, Callable[[list[str]], np.ndarray]] = {"fasttext": _fasttext_scorer(bundle, dim)}
    thresholds = {"fasttext": bundle.models[dim].threshold}
    for name, factory in baselines.items():
        started = time.time()
        model, thresholds[name] = _fit_baseline(factory, data)
        scorers[name] = model.predict
        log(f"    {dim}: fitted {name} in {time.time() - started:.0f} s")
    for name, scorer in scorers.items():
        results[name] = {}
        for source, examples in sets.items():
            results[name][source] = binary_metrics(
                scorer(_texts(examples)), _targets(examples), thresholds[name]
            )
    return results


def profile_tracking(
    bundle: Bundle, seed_data: SeedData, dims: list[str], profiles: list[Profile]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{dimension: {set: {"dimension" | "prosocial[<profile>]": ROC-AUC}} through the full scoring path.

    Why: corpora are tiered on a profile's `prosocial`, not on one dimension, and a profile mixes dimensions
    with weights, so it tracks each human label less closely than the dimension trained for it (a care set is
    diluted by respect, constructiveness and virtue). This shows by how much, per profile, with the scores
    `corpus score` and the curate stage write (chunking, calibration, aggregation of long texts).
    """
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for dim in dims:
        out[dim] = {}
        for source, examples in eval_sets(seed_data.dimensions[dim]).items():
            scores = bundle.score(_texts(examples))
            columns = {"dimension": scores[dim]}
            columns.update({f"prosocial[{p.name}]": p.aggregate(scores) for p in profiles})
            out[dim][source] = {
                name: binary_metrics(values, _targets(examples), 0.5).get("auc")
                for name, values in columns.items()
            }
    return out


def leave_one_source_out(
    dim: str,
    data: DimensionData,
    params: TrainParams,
    baselines: dict[str, Any],
    log: Callable[[str], None] = print,
    seed_data: SeedData | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Train without source S (train and calibration rows), test on S's evaluation set, for every S.

    When the dimension uses self-pretrained word vectors, they are relearned without S's texts too (from
    every dimension's training rows in `seed_data`), so nothing of S reaches the model.
    """
    sets = eval_sets(data)
    results: dict[str, dict[str, dict[str, float]]] = {"fasttext": {}, **{name: {} for name in baselines}}
    train_sources = {e.source for e in data.train}
    if len(train_sources) < 2:
        return {}
    dim_params = params.for_dimension(dim)
    for source, examples in sets.items():
        held = DimensionData(
            train=[e for e in data.train if e.source != source and source not in e.also],
            calib=[e for e in data.calib if e.source != source and source not in e.also],
            eval={source: examples},
        )
        if not held.train:
            continue
        with tempfile.TemporaryDirectory(prefix="ps-loso-") as tmp:
            run_params = replace(dim_params, quantize=False, per_dimension={})
            if dim_params.self_pretrain and not dim_params.pretrained_vectors:
                pool = seed_data.dimensions.values() if seed_data else [held]
                texts = [e.text for d in pool for e in d.train + d.calib if e.source != source]
                vec = pretrain_vectors(
                    texts, dim_params.dim, dim_params.pretrain_epoch, Path(tmp), log=lambda _m: None
                )
                run_params = replace(run_params, pretrained_vectors=str(vec))
            _, entry = train_dimension(dim, held, run_params, Path(tmp), log=lambda _m: None)
        results["fasttext"][source] = entry["metrics"][f"eval/{source}"]
        for name, factory in baselines.items():
            model, threshold = _fit_baseline(factory, held)
            results[name][source] = binary_metrics(
                model.predict(_texts(examples)), _targets(examples), threshold
            )
        log(
            f"    {dim} without {source}: "
            + ", ".join(f"{n}={r[source].get('auc')}" for n, r in results.items())
        )
    return results


def throughput(
    bundle: Bundle, baselines_fitted: dict[str, Any], texts: list[str], repeat: int = 3
) -> dict[str, float]:
    """Texts/s scoring every dimension: fastText bundle, TF-IDF (+ LR per dimension), MiniLM (+ LR per dimension).

    The same protocol for all three: one untimed warm-up, then the best of `repeat` timed runs. MiniLM is timed
    without its cache (the cost a corpus run would pay), on the first 1,000 texts.
    """

    def best_rate(score: Callable[[list[str]], Any], sample: list[str]) -> float:
        score(sample[:100])  # warm-up: lazy initialisation, caches
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            score(sample)
            best = min(best, time.perf_counter() - started)
        return len(sample) / best

    out = {"fasttext": best_rate(bundle.score, texts)}
    if "tfidf-lr" in baselines_fitted:
        models = baselines_fitted["tfidf-lr"]
        out["tfidf-lr"] = best_rate(lambda batch: [model.predict(batch) for model in models], texts)
    if "minilm-lr" in baselines_fitted:
        models = baselines_fitted["minilm-lr"]

        def minilm(batch: list[str]) -> None:
            vectors = models[0].encoder.encode_uncached(batch)
            for model in models:
                model.model.predict_proba(vectors)

        out["minilm-lr"] = best_rate(minilm, texts[: min(len(texts), 1000)])
    return out


# ---------------------------------------------------------------------------------------------- long documents

AGGREGATIONS = [
    {"method": "mean"},
    {"method": "min"},
    {"method": "mean_min", "weight": 0.25},
    {"method": "mean_min", "weight": 0.5},
    {"method": "mean_min", "weight": 0.75},
]


def _paragraphs(examples: list[Example], words: int, rng: np.random.Generator, count: int) -> list[str]:
    """`count` paragraphs of about `words` tokens, each made of same-class labelled texts."""
    out = []
    order = rng.permutation(len(examples))
    position = 0
    for _ in range(count):
        tokens: list[str] = []
        while len(tokens) < words:
            tokens.extend(examples[order[position % len(order)]].text.split(" "))
            position += 1
        out.append(" ".join(tokens[:words]))
    return out


def aggregation_experiment(
    bundle: Bundle, seed_data: SeedData, pages: int = 150, seed: int = 0
) -> dict[str, Any]:
    """Which chunk aggregation to use for long documents, measured on pages built from labelled calibration
    texts (a choice is tuned on the calibration split, never on the evaluation split).

    Per dimension: clean pages of 3-10 positive paragraphs (one chunk each); the same pages with one negative
    paragraph inserted at a random place; pages of negative paragraphs. For each method:
    - `drop_rate`: share of pages whose score falls when the bad paragraph is added (the requirement);
    - `auc_contaminated`: how well the score separates clean from contaminated pages;
    - `auc_pure`: clean positive vs negative pages;
    - `length_bias`: Spearman correlation of the clean pages' score with their length (0 is best: a long
      good page must not look worse just because it has more chunks to be unlucky in).
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    words = bundle.chunk_words
    report: dict[str, Any] = {}
    for dim in bundle.dimensions:
        data = seed_data.dimensions.get(dim)
        if data is None:
            continue
        pool = data.calib
        pos = [e for e in pool if e.target == 1.0]
        neg = [e for e in pool if e.target == 0.0]
        if len(pos) < 50 or len(neg) < 20:
            continue
        sizes = rng.integers(3, 11, size=pages)
        clean, dirty, bad, lengths = [], [], [], []
        for size in sizes:
            paras = _paragraphs(pos, words, rng, int(size))
            clean.append(paras)
            hostile = _paragraphs(neg, words, rng, 1)[0]
            at = int(rng.integers(0, len(paras) + 1))
            dirty.append(paras[:at] + [hostile] + paras[at:])
            bad.append(_paragraphs(neg, words, rng, int(size)))
            lengths.append(int(size))
        rows = {}
        chunk_scores = {}
        for name, docs in (("clean", clean), ("dirty", dirty), ("bad", bad)):
            flat = [p for doc in docs for p in doc]
            offsets = np.cumsum([0] + [len(doc) for doc in docs[:-1]])
            chunk_scores[name] = (bundle.models[dim].score(flat), offsets)
        for method in AGGREGATIONS:
            key = method["method"] + (f"@{method['weight']}" if "weight" in method else "")
            s = {name: aggregate(v, off, method) for name, (v, off) in chunk_scores.items()}
            rows[key] = {
                "drop_rate": round(float(np.mean(s["dirty"] < s["clean"])), 3),
                "mean_drop": round(float(np.mean(s["clean"] - s["dirty"])), 4),
                "auc_contaminated": round(
                    float(roc_auc_score([1] * pages + [0] * pages, np.r_[s["clean"], s["dirty"]])), 4
                ),
                "auc_pure": round(
                    float(roc_auc_score([1] * pages + [0] * pages, np.r_[s["clean"], s["bad"]])), 4
                ),
                "length_bias": round(float(spearmanr(lengths, s["clean"]).statistic), 3),
            }
        report[dim] = rows
    return report


def choose_aggregation(report: dict[str, Any]) -> dict[str, Any]:
    """The method with the best mean of auc_contaminated + auc_pure - |length_bias| over dimensions."""
    best, best_value = AGGREGATIONS[0], -1e9
    for method in AGGREGATIONS:
        key = method["method"] + (f"@{method['weight']}" if "weight" in method else "")
        values = [
            r[key]["auc_contaminated"] + r[key]["auc_pure"] - abs(r[key]["length_bias"])
            for r in report.values()
        ]
        if values and np.mean(values) > best_value:
            best, best_value = method, float(np.mean(values))
    return best
