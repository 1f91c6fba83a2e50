"""fastText training of a bundle: one binary model per dimension, calibrated, quantised, with a manifest.

Deterministic by construction, so `make classifier` reproduces the shipped bundle byte for byte: examples are
ordered by text hash and shuffled with a fixed seed, fastText runs with thread=1 and a fixed seed, and the
manifest holds no timestamps or timings.

Soft targets: a "neutral" row (not flagged, not positive; target 0.5) is written as a positive and a negative
line, so it teaches P = 0.5 without being called positive or negative. Rarer fractions (annotators split
1:4) stay one line carrying both labels in proportion, of which fastText's softmax loss picks one at random
each time it sees the line.

Repetition: small sources are repeated towards `min_per_source` and the minority class towards balance, both
at most `max_repeat` times. Respect sets `max_repeat` = 1: its large tweet sets overfit on repeated lines
(calibration-split AUC, TweetEval offensive 0.752 -> 0.791, Davidson 0.951 -> 0.965), and AUC and the
calibrated scores do not need balanced classes.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.bundle import (
    BUNDLE_FORMAT,
    DEFAULT_CALIBRATION,
    MANIFEST,
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    READABLE_FORMATS,
    DimensionModel,
    length_feature,
    logit,
    manifest_version,
    sha256_file,
)
from classifiers.dataset import DimensionData, Example, SeedData, balance, eval_texts_sha256
from classifiers.normalize import NORMALIZATION_VERSION

MIN_MATRIX_BYTES = 1 << 20
# what fit_calibration returns when the calibration split is too small or has one class
_IDENTITY = {k: v for k, v in DEFAULT_CALIBRATION.items() if k != "max_len"}
NAN_RETRIES = 8


def stable_allocations() -> None:
    """Make fastText 0.9.2's training deterministic (and free of random "Encountered NaN").

    With thread=1 its `DenseMatrix::uniform` initialises only the first tenth of the input matrix and leaves the
    rest as whatever malloc returns. Freshly mmapped pages are zero, reused heap memory is garbage (NaN at worst),
    so results depended on what the process allocated before (measured: the same file and seed gave different
    models or NaN from run to run). A fixed, small mmap threshold makes every large matrix come from fresh,
    zeroed pages; `check_params` makes sure the matrix is large enough to be mmapped.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (also switches off glibc's dynamic threshold)
    except (OSError, AttributeError):  # not glibc: nothing to do, and nothing we can do
        pass


@dataclass
class TrainParams:
    """fastText and data hyperparameters (recorded in the manifest).

    The defaults are the tuned configuration `make classifier` uses; see `corpus classifier eval` and the model
    card for what they achieve. `per_dimension` overrides them where a dimension's data differs: care mixes
    four sources of short comments and gains most from character n-grams and few epochs (10 epochs over the
    repeated positives overfit: GoEmotions 0.868 at 10, 0.886 at 4), respect has the most data and does best with
    plain word bigrams, no repeated lines and retraining after quantisation (`qretrain`), virtue (ETHICS
    scenarios, where word order matters) gains from word trigrams, constructiveness needs the length term.
    Every dimension calibrates fastText's logit times log(1 + tokens) (`length_scaled_logit`; why in
    bundle.DimensionModel, the calibration-split figures that chose it in classifiers/README.md).
    """

    dim: int = 64
    epoch: int = 5
    lr: float = 0.3
    wordNgrams: int = 2
    minn: int = 0
    maxn: int = 0
    minCount: int = 1
    bucket: int = 2_000_000
    loss: str = "softmax"
    thread: int = 1
    seed: int = 0
    quantize: bool = True
    qnorm: bool = True
    # 4-dim product-quantisation blocks: 2/3 of the size of dsub=2, same AUC (+-0.0005) on every set but virtue's
    dsub: int = 4
    cutoff: int = 50_000
    qretrain: bool = False  # fine-tune the kept rows after the cutoff (fastText's quantize retrain)
    max_per_source: int = 60_000
    min_per_source: int = 4000
    max_repeat: float = 4.0
    length_calibration: bool = False
    length_scaled_logit: bool = True  # calibrate logit x log(1 + tokens), not the logit
    self_pretrain: bool = True
    pretrain_epoch: int = 5
    pretrained_vectors: str = ""
    chunk_words: int = 150
    max_chunks: int = 64
    # chosen by `corpus classifier eval --aggregation` (evaluate.aggregation_experiment): best mean over the four
    # dimensions of AUC(clean vs +1 bad paragraph) + AUC(good vs bad pages) - |correlation with page length|
    aggregation: dict[str, Any] = field(default_factory=lambda: {"method": "mean_min", "weight": 0.25})
    per_dimension: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "care": {
                "self_pretrain": False,
                "minn": 2,
                "maxn": 4,
                "epoch": 4,
                "lr": 0.2,
                "min_per_source": 6000,
            },
            "respect": {"self_pretrain": False, "dim": 50, "max_repeat": 1.0, "qretrain": True},
            # dsub=3 keeps virtue.ftz under 2 MB (1.94; dsub=2: 2.44) at ETHICS justice 0.733 vs 0.734 (calibration split)
            "virtue": {"wordNgrams": 3, "dsub": 3},
            "constructiveness": {"length_calibration": True},
        },
        metadata={"help": "dimension -> {hyperparameter: value} overrides"},
    )

    def for_dimension(self, name: str) -> TrainParams:
        """These parameters with the dimension's overrides applied (dimensions differ in data size and signal)."""
        overrides = self.per_dimension.get(name, {})
        unknown = set(overrides) - {
            f for f in self.__dataclass_fields__ if f not in {"per_dimension", "aggregation"}
        }
        if unknown:
            raise ValueError(f"per_dimension.{name}: unknown hyperparameters {sorted(unknown)}")
        return replace(self, per_dimension={}, **overrides)

    def check(self) -> None:
        """Refuse settings under which fastText training is not reproducible (see `stable_allocations`)."""
        if self.thread != 1:
            raise ValueError("thread must be 1: fastText's multi-threaded SGD is not deterministic")
        if self.wordNgrams < 2 and self.maxn == 0:
            raise ValueError(
                "use wordNgrams >= 2 or char n-grams (maxn > 0): fastText then drops its hash buckets"
            )
        if self.dim < 16:
            raise ValueError(
                f"dim={self.dim}: use dim >= 16 (fastText 0.9.2 training hits NaN at random below that here)"
            )
        if self.bucket * self.dim * 4 < MIN_MATRIX_BYTES:
            raise ValueError(
                f"bucket * dim too small ({self.bucket} x {self.dim}): need >= {MIN_MATRIX_BYTES // 4} floats"
            )

    def fasttext_args(self) -> dict[str, Any]:
        keys = [
            "dim",
            "epoch",
            "lr",
            "wordNgrams",
            "minn",
            "maxn",
            "minCount",
            "bucket",
            "loss",
            "thread",
            "seed",
        ]
        args = {k: getattr(self, k) for k in keys}
        if self.pretrained_vectors:
            args["pretrainedVectors"] = self.pretrained_vectors
        return args


def fasttext_line(example: Example) -> str:
    """`__label__1`, `__label__0`, or for a soft target the labels in its proportion (one or two lines).

    A 0.5 row (nearly every soft row: "neutral") becomes a positive and a negative line, so each pass teaches
    exactly P = 0.5 instead of a coin flip between the labels; on the calibration split that lifted TweetEval
    offensive from 0.768 to 0.781 AUC (respect, 3 epochs). Rarer fractions (in tenths: 0.2, 0.3) stay one line
    with the label mix.
    """
    k = int(round(example.target * 10))
    if k >= 10:
        return f"{POSITIVE_LABEL} {example.text}"
    if k <= 0:
        return f"{NEGATIVE_LABEL} {example.text}"
    if k == 5:
        return f"{POSITIVE_LABEL} {example.text}\n{NEGATIVE_LABEL} {example.text}"
    g = math.gcd(k, 10)
    labels = [POSITIVE_LABEL] * (k // g) + [NEGATIVE_LABEL] * ((10 - k) // g)
    return " ".join(labels) + " " + example.text


def write_training_file(examples: list[Example], path: Path, seed: int) -> str:
    """Write shuffled fastText lines; returns the sha256 of the file (recorded in the manifest)."""
    rng = np.random.default_rng(seed)
    lines = [fasttext_line(e) for e in examples]
    order = rng.permutation(len(lines))
    path.write_text("".join(lines[i] + "\n" for i in order), encoding="utf-8")
    return sha256_file(path)


def fit_calibration(
    raw: np.ndarray,
    targets: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    length_term: bool = False,
    scale_by_length: bool = False,
) -> dict[str, float]:
    """Logistic calibration with soft targets (y counts as positive, 1-y as negative).

    Returns {"a", "b", "c", "d"}: P = sigmoid(a z + d z L + c L + b), z = logit(raw), L = `lengths`. With
    `scale_by_length` the logit enters only as z L (a = 0), so P rises with fastText's P at every length; a free
    `a` as well fits slightly better on virtue but comes out negative, which would invert short texts' ranking.
    c is fitted only with `length_term`. Neither: plain Platt.
    """
    from sklearn.linear_model import LogisticRegression

    if (length_term or scale_by_length) and lengths is None:
        raise ValueError("fit_calibration: length_term and scale_by_length need lengths")
    if len(raw) < 20 or len(set(np.round(targets, 3))) < 2:
        return dict(_IDENTITY)
    z = logit(raw)
    columns = {"d": z * np.asarray(lengths, dtype=float)} if scale_by_length else {"a": z}
    if length_term:
        columns["c"] = np.asarray(lengths, dtype=float)
    x = np.column_stack(list(columns.values()))
    xx = np.vstack([x, x])
    yy = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    ww = np.concatenate([targets, 1.0 - targets])
    keep = ww > 0
    lr = LogisticRegression(C=1e4, solver="lbfgs", max_iter=5000)
    lr.fit(xx[keep], yy[keep], sample_weight=ww[keep])
    fitted = dict(zip(columns, (round(float(w), 6) for w in lr.coef_[0]), strict=True))
    return {"a": 0.0, "c": 0.0, "d": 0.0, **fitted, "b": round(float(lr.intercept_[0]), 6)}


def binary_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, F1 at `threshold`, expected calibration error (10 bins) on the hard-labelled rows.

    Sets without positives but with neutral rows are scored as "neutral ranks above negative" (0.5 -> 1), by
    AUC only: the models learn P = 0.5 for neutral rows, so F1 and calibration error against a relabelled 1.0
    would measure nothing.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    targets = np.asarray(targets, dtype=float)
    scores = np.asarray(scores, dtype=float)
    ranking_only = not np.any(targets == 1.0) and np.any(targets == 0.5)
    if ranking_only:
        targets = np.where(targets == 0.5, 1.0, targets)
    hard = (targets == 0.0) | (targets == 1.0)
    y, s = targets[hard], scores[hard]
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    out: dict[str, float] = {"n_pos": n_pos, "n_neg": n_neg}
    if n_pos == 0 or n_neg == 0:
        return out
    out["auc"] = round(float(roc_auc_score(y, s)), 4)
    if ranking_only:
        return out
    out["f1"] = round(float(f1_score(y, s >= threshold)), 4)
    bins = np.clip((s * 10).astype(int), 0, 9)
    ece = sum(
        abs(y[bins == b].mean() - s[bins == b].mean()) * (bins == b).sum()
        for b in range(10)
        if (bins == b).any()
    )
    out["ece"] = round(float(ece / len(y)), 4)
    return out


def best_f1_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """The threshold maximising F1 on the calibration split (hard rows); 0.5 when undefined."""
    hard = (targets == 0.0) | (targets == 1.0)
    y, s = targets[hard], scores[hard]
    if y.sum() == 0 or y.sum() == len(y):
        return 0.5
    best, best_t = -1.0, 0.5
    for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
        pred = s >= t
        tp = float((pred & (y == 1)).sum())
        f1 = 2 * tp / (pred.sum() + y.sum()) if (pred.sum() + y.sum()) else 0.0
        if f1 > best + 1e-9:
            best, best_t = f1, float(t)
    return best_t


def pretrain_vectors(
    texts: list[str], dim: int, epoch: int, workdir: Path, log: Callable[[str], None] = print
) -> Path:
    """Skipgram word vectors learned from the seed texts themselves (training and calibration rows only).

    A pretrained-free trick: no outside model or data, but the supervised model starts from vectors in which
    words used alike are close, which helps the small sources (ETHICS virtue, SFU) and rare words. Deterministic
    (thread=1, sorted unique texts); the .vec file's sha256 goes into the manifest.
    """
    corpus = workdir / f"pretrain-{dim}.txt"
    corpus.write_text("\n".join(sorted(set(texts))) + "\n", encoding="utf-8")
    vec = workdir / f"pretrain-{dim}.vec"
    args = {"model": "skipgram", "dim": dim, "epoch": epoch, "minCount": 2, "thread": 1, "bucket": 200_000}
    fit_in_fresh_process("unsupervised", corpus, args, vec)
    with open(vec, encoding="utf-8") as handle:
        count = int(handle.readline().split()[0])
    log(f"  pretrained {count} word vectors (dim {dim}) on {len(set(texts))} seed texts")
    return vec


def _fit_child(
    kind: str, input_path: str, args: dict[str, Any], quantize: dict[str, Any] | None, out_path: str
) -> None:
    """Runs in a fresh spawned process: fastText training (+ quantisation), saved to `out_path`.

    fastText 0.9.2 reads uninitialised memory somewhere in training: in a long-lived process that has already
    allocated and freed a lot (a test session, an eval run) it throws "Encountered NaN" every time or, worse,
    trains a different model. A fresh process with `stable_allocations()` gives the same model byte for byte
    (a run that does hit the spurious NaN is retried, with the same result once it passes).
    """
    stable_allocations()
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None
    model = None
    for attempt in range(1, NAN_RETRIES + 1):
        try:
            if kind == "supervised":
                model = fasttext.train_supervised(input=input_path, verbose=0, **args)
            else:
                model = fasttext.train_unsupervised(input_path, verbose=0, **args)
            break
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == NAN_RETRIES:
                raise RuntimeError(
                    f"fastText training on {input_path} failed ({exc}) after {attempt} attempts"
                ) from None
    if quantize:
        model.quantize(input=input_path, **quantize)
    if kind == "supervised":
        model.save_model(out_path)
        return
    words = model.get_words()
    with open(out_path, "w", encoding="utf-8") as handle:
        handle.write(f"{len(words)} {args['dim']}\n")
        for word in words:
            handle.write(word + " " + " ".join(f"{x:.5f}" for x in model.get_word_vector(word)) + "\n")


def fit_in_fresh_process(
    kind: str, input_path: Path, args: dict[str, Any], out_path: Path, quantize: dict[str, Any] | None = None
) -> Path:
    """`_fit_child` in a spawned process (see there why); returns `out_path`."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pool.apply(_fit_child, (kind, str(input_path), args, quantize, str(out_path)))
    return out_path


def train_dimension(
    name: str, data: DimensionData, params: TrainParams, workdir: Path, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """Train, calibrate and (optionally) quantise one dimension's model; returns (model file, manifest entry)."""
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    params = params.for_dimension(name)
    params.check()
    examples = balance(
        data.train, params.max_per_source, params.max_repeat, params.seed, params.min_per_source
    )
    train_file = workdir / f"{name}.train.txt"
    data_sha = write_training_file(examples, train_file, params.seed)
    suffix = ".ftz" if params.quantize else ".bin"
    model_path = workdir / f"{name}{suffix}"
    quantize = None
    if params.quantize:
        quantize = {
            "qnorm": params.qnorm,
            "dsub": params.dsub,
            "cutoff": params.cutoff,
            "retrain": params.qretrain,
            "thread": 1,
        }
    fit_in_fresh_process("supervised", train_file, params.fasttext_args(), model_path, quantize)
    model = fasttext.load_model(str(model_path))
    scorer = DimensionModel(name, model)
    calib_texts = [e.text for e in data.calib]
    calib_targets = np.array([e.target for e in data.calib])
    calib_raw = scorer.predict_raw(calib_texts) if data.calib else np.zeros(0)
    lengths = length_feature(calib_texts, params.chunk_words)
    fitted = fit_calibration(
        calib_raw,
        calib_targets,
        lengths,
        length_term=params.length_calibration,
        scale_by_length=params.length_scaled_logit,
    )
    scorer.calibration = {**fitted, "max_len": params.chunk_words}
    if fitted["a"] + fitted["d"] <= 0:  # one of them is fitted, the other 0: the logit's weight must be > 0
        log(
            f"  WARNING {name}: calibration slope {fitted['a'] + fitted['d']:.3g} <= 0 (calibration split "
            f"{len(calib_texts)} texts): the model ranks its own calibration texts no better than chance"
        )
    calibrated = scorer.calibrate(calib_raw, calib_texts) if len(calib_raw) else calib_raw
    threshold = best_f1_threshold(calibrated, calib_targets) if len(calib_raw) else 0.5
    metrics = {"calib": binary_metrics(calibrated, calib_targets, threshold)} if len(calib_raw) else {}
    for source, examples_eval in data.eval.items():
        if not examples_eval:
            continue
        scores = scorer.score([e.text for e in examples_eval])
        metrics[f"eval/{source}"] = binary_metrics(
            scores, np.array([e.target for e in examples_eval]), threshold
        )
    # a set with one class has no AUC by design (negatives-only sources); a model with no AUC on its calibration
    # split or on any evaluation set, or left uncalibrated, had too few rows to be measured: say so, loudly
    unmeasured = "auc" not in metrics.get("calib", {}) or not any(
        "auc" in m for k, m in metrics.items() if k.startswith("eval/")
    )
    if unmeasured or fitted == _IDENTITY:
        problems = (["no ROC-AUC to validate it"] if unmeasured else []) + (
            ["calibration left at identity"] if fitted == _IDENTITY else []
        )
        log(
            f"  WARNING {name}: too few labelled rows to measure this model (train {len(data.train)}, "
            f"calibration {len(data.calib)}, evaluation {sum(map(len, data.eval.values()))} texts; ROC-AUC "
            f"{ {k: m.get('auc') for k, m in metrics.items()} or 'none' }): {' and '.join(problems)}"
        )
    train_sources: dict[str, int] = {}
    for e in data.train:
        train_sources[e.source] = train_sources.get(e.source, 0) + 1
    entry = {
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "bytes": model_path.stat().st_size,
        "positive_label": POSITIVE_LABEL,
        "fasttext_args": params.fasttext_args(),
        "calibration": {
            "method": "sigmoid(a z + d z L + c L + b), z = logit p, L = log1p tokens",
            **scorer.calibration,
        },
        "threshold": threshold,
        "training_data": {
            "sha256": data_sha,
            "lines": len(examples),
            "unique_examples": len(data.train),
            "calibration_examples": len(data.calib),
            "eval_texts_sha256": eval_texts_sha256(data),
            "per_source": dict(sorted(train_sources.items())),
        },
        "metrics": metrics,
    }
    summary = ", ".join(f"{k}: auc={v.get('auc')}" for k, v in metrics.items())
    log(f"  {name}: {len(examples)} examples, {entry['bytes'] / 1e6:.2f} MB; {summary}")
    return model_path, entry


def build_manifest(
    entries: dict[str, dict[str, Any]],
    seed_data: SeedData,
    params: TrainParams,
    name: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from classifiers.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    sources = []
    for recipe in seed_data.sources:
        sources.append(
            {
                "name": recipe.name,
                "license": recipe.license,
                "commercial": recipe.commercial,
                "domain": recipe.domain,
                "citation": recipe.citation,
                "dimensions": recipe.dimensions,
                "counts": seed_data.counts.get(recipe.name, {}),
            }
        )
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "dimensions": sorted(entries),
        "rubric_only_dimensions": taxonomy.rubric_dimensions,
        "taxonomy_version": taxonomy.version,
        "normalization_version": NORMALIZATION_VERSION,
        "models": {d: entries[d] for d in sorted(entries)},
        "scoring": {
            "chunk_words": params.chunk_words,
            "max_chunks": params.max_chunks,
            "aggregation": params.aggregation,
        },
        "hyperparameters": asdict(params),
        "sources": sources,
    }
    if extra:
        manifest.update(extra)
    manifest["version"] = manifest_version(manifest)
    return manifest


class OutputFolderError(ValueError):
    """`--out` names something that is neither an empty folder nor a bundle: replacing it would delete files."""


def _holds_bundle(folder: Path) -> bool:
    """Whether `folder` holds a bundle of this project (a manifest.json in its format), not just any files."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return False
    return (
        isinstance(manifest, dict)
        and manifest.get("format") in READABLE_FORMATS
        and {"dimensions", "models", "version"} <= set(manifest)
    )


def check_output_folder(out: str | Path) -> None:
    """Refuse an output that training would destroy: only a missing or empty folder, or an older bundle, is
    replaced (`--out .` or `--out ~/data` once deleted the folder and everything in it)."""
    out = Path(out).resolve()
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputFolderError(
            f"output {out} is a file, not a bundle folder: choose another --out, or remove the file first"
        )
    if any(out.iterdir()) and not _holds_bundle(out):
        raise OutputFolderError(
            f"output folder {out} is not empty and holds no classifier bundle ({MANIFEST}): refusing to replace "
            "it; choose a new or empty folder for --out (an existing bundle folder is replaced)"
        )


def install_bundle(staging: Path, out: Path) -> None:
    """Move a finished bundle into place atomically (rename), replacing an older bundle or an empty folder
    (anything else is refused by `check_output_folder`)."""
    out = out.resolve()
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        trash = out.parent / f".{out.name}.old-{next(tempfile._get_candidate_names())}"
        out.rename(trash)
        staging.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(out)


def train_bundle(
    seed_data: SeedData,
    out: str | Path,
    params: TrainParams | None = None,
    dimensions: list[str] | None = None,
    name: str = "default",
    log: Callable[[str], None] = print,
    extra_manifest: dict[str, Any] | None = None,
) -> Path:
    """Train every dimension, write models + manifest + model card into `out` (atomically)."""
    from classifiers.card import write_model_card

    params = params or TrainParams()
    out = Path(out)
    check_output_folder(out)  # before hours of training, not after
    dims = dimensions or sorted(seed_data.dimensions)
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    staging.chmod(0o755)
    try:
        with tempfile.TemporaryDirectory(prefix="ps-train-") as tmp:
            entries = {}
            vectors: dict[int, Path] = {}
            pretrain_info: dict[str, Any] = {}
            for dim in dims:
                p = params.for_dimension(dim)
                if p.self_pretrain and not p.pretrained_vectors and p.dim not in vectors:
                    # every dimension's texts, also when training only some: a one-dimension retrain (a
                    # tuning run) then starts from the same vectors as the full build and reproduces its model
                    texts = [
                        e.text
                        for d in sorted(seed_data.dimensions)
                        for e in seed_data.dimensions[d].train + seed_data.dimensions[d].calib
                    ]
                    vectors[p.dim] = pretrain_vectors(texts, p.dim, p.pretrain_epoch, Path(tmp), log)
                    pretrain_info[str(p.dim)] = {
                        "sha256": sha256_file(vectors[p.dim]),
                        "texts": len(set(texts)),
                    }
            for dim in dims:
                p = params.for_dimension(dim)
                dim_params = params
                if p.self_pretrain and not p.pretrained_vectors:
                    dim_params = replace(
                        params,
                        per_dimension={
                            **params.per_dimension,
                            dim: {
                                **params.per_dimension.get(dim, {}),
                                "pretrained_vectors": str(vectors[p.dim]),
                            },
                        },
                    )
                model_path, entry = train_dimension(
                    dim, seed_data.dimensions[dim], dim_params, Path(tmp), log
                )
                if p.self_pretrain:
                    entry["pretrained_vectors"] = pretrain_info.get(
                        str(p.dim), {"file": p.pretrained_vectors}
                    )
                    entry["fasttext_args"].pop("pretrainedVectors", None)
                shutil.move(str(model_path), staging / model_path.name)
                entries[dim] = entry
        manifest = build_manifest(entries, seed_data, params, name, extra_manifest)
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        write_model_card(manifest, staging / "README.md")
        if manifest.get("warnings"):  # e.g. a licence filter that left a dimension without sources
            with open(staging / "README.md", "a", encoding="utf-8") as card:
                card.write("\n## Warnings\n\n" + "".join(f"- {w}\n" for w in manifest["warnings"]))
        install_bundle(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"bundle {manifest['version']} -> {out}")
    return out
