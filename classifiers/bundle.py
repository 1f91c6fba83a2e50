"""The model bundle: a folder with one fastText model per dimension, `manifest.json` and a model card.

Used by curate (the scoring step), synthetic (checking dialogues) and mix. Loading checks every file before
fastText sees it, because fastText aborts the process (a C++ crash, no Python exception) on some truncated
or foreign files: existence, the fastText magic number, and the sha256 the manifest recorded. A problem
becomes a `BundleError` that names the path.

`bundle.version` is a content hash (of the manifest, which holds every model file's sha256), recorded in
every scored document as `classifier_version`.

Scoring: texts are normalised exactly as in training (classifiers.normalize, version checked), split into
windows of `chunk_words` tokens, every chunk is scored by every dimension's model in one batched predict,
chunk probabilities are calibrated (a logistic fit on a held-out calibration split at training time) and
aggregated per document with the method the manifest names (chosen by experiment; see evaluate.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.normalize import NORMALIZATION_VERSION, chunk_tokens, normalize_tokens

MANIFEST = "manifest.json"
# 2: calibration may carry `d`, the weight of logit x log(1 + tokens). Format 1 bundles (no `d`) still load; code that
# reads only format 1 refuses a format 2 bundle instead of silently dropping `d`.
BUNDLE_FORMAT = 2
READABLE_FORMATS = (1, 2)
# identity calibration: P = fastText's P (see DimensionModel)
DEFAULT_CALIBRATION: dict[str, float] = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0, "max_len": 150}
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin/.ftz file
POSITIVE_LABEL = "__label__1"
NEGATIVE_LABEL = "__label__0"
BINARY_LABELS = (POSITIVE_LABEL, NEGATIVE_LABEL)
AGGREGATIONS = ("mean", "min", "mean_min")
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "models" / "default"


class BundleError(RuntimeError):
    """A bundle that cannot be used: missing folder, bad manifest, missing or corrupt model file."""


def default_bundle_path() -> Path:
    """The shipped default bundle (`make classifier` rebuilds it); `PROSOCIAL_BUNDLE` overrides."""
    return Path(os.environ.get("PROSOCIAL_BUNDLE", DEFAULT_BUNDLE))


def resolve_bundle_path(name_or_path: str | Path | None) -> Path:
    """'default' (or None/empty) -> default_bundle_path(); anything else is a folder path."""
    if name_or_path in (None, "", "default"):
        return default_bundle_path()
    return Path(name_or_path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_version(manifest: dict[str, Any]) -> str:
    """Content hash of a manifest (which pins each model file by sha256)."""
    body = {k: v for k, v in manifest.items() if k != "version"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def check_model_file(path: Path, expected_sha256: str | None = None) -> None:
    """Raise BundleError unless `path` looks like an intact fastText model (before fastText reads it)."""
    if not path.is_file():
        raise BundleError(f"model file missing: {path}")
    size = path.stat().st_size
    if size < 16:
        raise BundleError(f"model file truncated or empty ({size} bytes): {path}")
    with open(path, "rb") as handle:
        magic = int.from_bytes(handle.read(4), "little", signed=True)
    if magic != FASTTEXT_MAGIC:
        raise BundleError(f"not a fastText model (bad magic number): {path}")
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise BundleError(f"model file corrupt (sha256 differs from {MANIFEST}): {path}")


def load_fasttext(path: Path, expected_sha256: str | None = None):
    """fastText `load_model` behind the file checks, with its stderr warning silenced."""
    import fasttext

    check_model_file(path, expected_sha256)
    fasttext.FastText.eprint = lambda *args, **kwargs: None  # "load_model does not return WordVectorModel"
    try:
        return fasttext.load_model(str(path))
    except Exception as exc:  # ValueError / RuntimeError from the C++ loader
        raise BundleError(f"fastText cannot load {path}: {exc}") from None


def aggregate(chunk_scores: np.ndarray, offsets: np.ndarray, method: dict[str, Any]) -> np.ndarray:
    """Per-document score from per-chunk scores; `offsets[i]` is the first chunk of document i.

    Methods: `mean`; `min`; `mean_min` (weight w: (1-w)*mean + w*min, so one bad chunk pulls a page down
    but a long good page is not judged by its worst sentence alone).
    """
    kind = method.get("method", "mean")
    counts = np.diff(np.append(offsets, len(chunk_scores)))
    mean = np.add.reduceat(chunk_scores, offsets) / counts
    if kind == "mean":
        return mean
    low = np.minimum.reduceat(chunk_scores, offsets)
    if kind == "min":
        return low
    if kind == "mean_min":
        weight = float(method.get("weight", 0.5))
        return (1.0 - weight) * mean + weight * low
    raise BundleError(f"unknown aggregation method {kind!r} (expected mean, min, mean_min)")


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-5, 1 - 1e-5]: fastText's probabilities reach 1.000007 and 1e-5."""
    clipped = np.clip(p, 1e-5, 1 - 1e-5)
    return np.log(clipped / (1.0 - clipped))


def length_feature(lines: Sequence[str], max_len: int) -> np.ndarray:
    """log(1 + tokens) per normalised line, capped at `max_len` tokens (the chunk size)."""
    counts = np.fromiter(
        (line.count(" ") + 1 if line else 0 for line in lines), dtype=np.float64, count=len(lines)
    )
    return np.log1p(np.minimum(counts, max_len))


@dataclass
class DimensionModel:
    """One dimension: a fastText model plus its calibration (fitted on the held-out calibration split).

    Calibration is logistic on z = logit(p_fastText) and L = log(1 + tokens): sigmoid(a z + d z L + c L + b).
    fastText averages its n-gram vectors, so its logit is the mean evidence per n-gram: the same average is
    more certain over 100 tokens than over 5, and a slur in a long tweet moves it less than in a short one.
    Calibrating z L instead of z (a = 0, d > 0) lets the evidence grow with length, as TF-IDF's L2 norm does
    (by sqrt(n)); on the calibration split it lowers the log loss of care, respect and virtue and lifts the
    AUC of most sets. The c L term is for labels that depend on length itself (constructive comments are
    long: length alone has ROC-AUC 0.92 on SFU constructiveness). Which terms a dimension uses is chosen on
    the calibration split (TrainParams); format 1 bundles have no d.
    """

    name: str
    model: Any  # fasttext.FastText._FastText
    calibration: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CALIBRATION))
    threshold: float = 0.5

    def predict_raw(self, lines: list[str], terminated: list[str] | None = None) -> np.ndarray:
        """P(positive) per line, uncalibrated (one batched fastText call).

        `terminated`: the same lines with a trailing newline, as fastText's multilinePredict wants them; the
        bundle builds that list once for all dimensions instead of letting each `predict` call copy every line.
        """
        if terminated is None:
            labels, probs = self.model.predict(lines, k=1)
        else:
            labels, probs = self.model.f.multilinePredict(terminated, 1, 0.0, "strict")
        out = np.fromiter((p[0] for p in probs), dtype=np.float64, count=len(lines))
        negative = np.fromiter((lab[0] != POSITIVE_LABEL for lab in labels), dtype=bool, count=len(lines))
        out[negative] = 1.0 - out[negative]
        return out

    @property
    def uses_length(self) -> bool:
        return bool(self.calibration.get("c", 0.0) or self.calibration.get("d", 0.0))

    @property
    def max_len(self) -> int:
        return int(self.calibration.get("max_len", 150))

    def calibrate(
        self, raw: np.ndarray, lines: Sequence[str] | None = None, length: np.ndarray | None = None
    ) -> np.ndarray:
        """sigmoid((a + d L) z + c L + b). L comes from `lines` (the scored texts), or `length` when the caller
        computed `length_feature(lines, self.max_len)` once for several models; one is required when c or d is
        set."""
        cal = self.calibration
        c, d = cal.get("c", 0.0), cal.get("d", 0.0)
        slope: float | np.ndarray = cal.get("a", 1.0)
        z = cal.get("b", 0.0)
        if c or d:
            if length is None and lines is None:  # with a = 0 every text would get the same score
                raise ValueError(f"{self.name}: this calibration has length terms; pass the scored lines")
            if length is None:
                length = length_feature(lines, self.max_len)
            slope = slope + d * length
            z = z + c * length
        return 1.0 / (1.0 + np.exp(-(slope * logit(raw) + z)))

    def score(
        self, lines: list[str], terminated: list[str] | None = None, length: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated P(dimension) per normalised line (lines hold no newline: `normalize` removes them)."""
        return self.calibrate(self.predict_raw(lines, terminated), lines, length)


class Bundle:
    """A loaded bundle. Thread-safe for scoring (fastText predict holds no Python state)."""

    def __init__(self, path: Path, manifest: dict[str, Any], models: dict[str, DimensionModel]):
        self.path = path
        self.manifest = manifest
        self.models = models
        self.version: str = manifest["version"]
        self.dimensions: list[str] = list(manifest["dimensions"])
        scoring = manifest.get("scoring") or {}  # null means "not given", as read_manifest checks it
        self.chunk_words: int = int(scoring.get("chunk_words", 150))
        self.max_chunks: int = int(scoring.get("max_chunks", 64))
        self.aggregation: dict[str, Any] = dict(scoring.get("aggregation") or {"method": "mean"})

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, version={self.version!r}, dimensions={self.dimensions})"

    @property
    def thresholds(self) -> dict[str, float]:
        return {d: m.threshold for d, m in self.models.items()}

    def chunk(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Normalised chunks of all texts and the offset of each text's first chunk."""
        chunks: list[str] = []
        offsets = np.empty(len(texts), dtype=np.int64)
        words, limit = self.chunk_words, self.chunk_words * self.max_chunks
        for index, text in enumerate(texts):
            offsets[index] = len(chunks)
            tokens = normalize_tokens(text or "")
            if len(tokens) <= words:
                chunks.append(" ".join(tokens))
                continue
            if len(tokens) > limit:
                # very long pages: an even sample of whole windows, not the first N (the page's start says
                # little about its end) and not every k-th word (word pairs are what the model reads)
                windows = len(tokens) // words
                starts = np.linspace(0, windows - 1, self.max_chunks).round().astype(int) * words
                chunks.extend(" ".join(tokens[start : start + words]) for start in starts)
                continue
            chunks.extend(chunk_tokens(tokens, words))
        return chunks, offsets

    def score_chunks(self, chunks: list[str]) -> dict[str, np.ndarray]:
        """Calibrated P(dimension) per chunk."""
        terminated = [chunk + "\n" for chunk in chunks]
        lengths = {  # one length feature per batch, shared by the dimensions (they use the same max_len)
            m.max_len: length_feature(chunks, m.max_len) for m in self.models.values() if m.uses_length
        }
        return {
            d: self.models[d].score(chunks, terminated, lengths.get(self.models[d].max_len))
            for d in self.dimensions
        }

    def score(self, texts: Sequence[str], aggregation: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Per dimension, P(prosocial) in [0, 1] for each text (float32); long texts are scored by chunks."""
        if isinstance(texts, str):
            raise TypeError("score() takes a list of texts, not one string")
        if len(texts) == 0:
            return {d: np.zeros(0, dtype=np.float32) for d in self.dimensions}
        return self.score_chunked(*self.chunk(texts), aggregation)

    def score_chunked(
        self, chunks: list[str], offsets: np.ndarray, aggregation: dict[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """`score` of texts already cut by `chunk` (for callers that also look at the chunks)."""
        if len(offsets) == 0:
            return {d: np.zeros(0, dtype=np.float32) for d in self.dimensions}
        per_chunk = self.score_chunks(chunks)
        if len(chunks) == len(offsets):
            return {d: v.astype(np.float32) for d, v in per_chunk.items()}
        method = aggregation or self.aggregation
        return {d: aggregate(v, offsets, method).astype(np.float32) for d, v in per_chunk.items()}


def read_manifest(path: Path) -> dict[str, Any]:
    """The bundle's manifest, validated (BundleError naming the file otherwise)."""
    folder = Path(path)
    if folder.is_file():  # e.g. --model tiny/care.ftz
        raise BundleError(
            f"{folder} is a file: expected the bundle folder that holds {MANIFEST} (its parent {folder.parent}?)"
        )
    if not folder.is_dir():
        raise BundleError(f"classifier bundle folder not found: {folder}")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"bundle manifest missing: {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle manifest unreadable: {manifest_path}: {exc}") from None
    for key in ("format", "dimensions", "models", "normalization_version", "version"):
        if key not in manifest:
            raise BundleError(f"bundle manifest lacks key '{key}': {manifest_path}")
    if manifest["format"] not in READABLE_FORMATS:
        raise BundleError(
            f"{manifest_path}: bundle format {manifest['format']} "
            f"(this code reads {', '.join(map(str, READABLE_FORMATS))})"
        )
    if manifest["normalization_version"] != NORMALIZATION_VERSION:
        raise BundleError(
            f"{manifest_path}: trained with text normalisation v{manifest['normalization_version']}, this code "
            f"normalises with v{NORMALIZATION_VERSION}: retrain the bundle (make classifier)"
        )
    if manifest_version(manifest) != manifest["version"]:
        raise BundleError(
            f"{manifest_path}: content hash differs from its recorded version (edited by hand?)"
        )
    _check_scoring(manifest.get("scoring") or {}, manifest_path)
    missing = [d for d in manifest["dimensions"] if d not in manifest["models"]]
    if missing:
        raise BundleError(f"{manifest_path}: models missing for dimensions {missing}")
    for dim in manifest["dimensions"]:
        # the sha256 is what stands between a truncated .ftz and a crash inside fastText's C++ loader
        entry = manifest["models"][dim]
        if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
            raise BundleError(f"{manifest_path}: models.{dim} needs 'file' and 'sha256'")
        # numbers the scorer turns into floats: "high" would otherwise be a bare ValueError at load
        _number(entry.get("threshold", 0.5), f"models.{dim}.threshold", manifest_path)
        calibration = entry.get("calibration") or {}
        if not isinstance(calibration, dict):
            raise BundleError(
                f"{manifest_path}: models.{dim}.calibration must be a mapping, got {calibration!r}"
            )
        for key in DEFAULT_CALIBRATION.keys() & calibration.keys():
            _number(calibration[key], f"models.{dim}.calibration.{key}", manifest_path)
    return manifest


def _check_scoring(scoring: dict[str, Any], manifest_path: Path) -> None:
    """The chunking and aggregation settings, checked at load: a bad value would otherwise surface inside a
    worker at the first long page (an unknown method, a division by zero) or as silently clipped scores."""
    for key in ("chunk_words", "max_chunks"):
        value = scoring.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BundleError(f"{manifest_path}: scoring.{key} must be an integer >= 1, got {value!r}")
    method = scoring.get("aggregation") or {"method": "mean"}
    if not isinstance(method, dict) or method.get("method", "mean") not in AGGREGATIONS:
        raise BundleError(
            f"{manifest_path}: scoring.aggregation.method must be one of {AGGREGATIONS}, got {method!r}"
        )
    weight = method.get("weight", 0.5)
    if not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
        raise BundleError(f"{manifest_path}: scoring.aggregation.weight must be in [0, 1], got {weight!r}")


def _number(value: Any, key: str, manifest_path: Path) -> float:
    """A finite number from the manifest; a BundleError naming the key otherwise (not a bare ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):  # training never writes strings
        raise BundleError(f"{manifest_path}: {key} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise BundleError(f"{manifest_path}: {key} must be a finite number, got {value!r}")
    return float(value)


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load and check a bundle folder ('default' or None: the shipped default)."""
    folder = resolve_bundle_path(path)
    manifest = read_manifest(folder)
    models = {}
    for dim in manifest["dimensions"]:
        entry = manifest["models"][dim]
        model = load_fasttext(folder / entry["file"], entry["sha256"])
        labels = sorted(model.get_labels())
        if labels != sorted(BINARY_LABELS):  # e.g. a language-ID model under a dimension's name
            raise BundleError(
                f"{folder / entry['file']}: labels {labels[:5]} are not {sorted(BINARY_LABELS)}"
            )
        cal = {k: float(v) for k, v in (entry.get("calibration") or {}).items() if k in DEFAULT_CALIBRATION}
        models[dim] = DimensionModel(
            dim,
            model,
            {**DEFAULT_CALIBRATION, **cal},
            float(entry.get("threshold", 0.5)),
        )
    return Bundle(folder.resolve(), manifest, models)


_CACHE: dict[tuple[str, str], Bundle] = {}
_CACHE_LOCK = threading.Lock()


def cached_bundle(path: str | Path | None = None) -> Bundle:
    """One loaded bundle per process and folder (keyed by the manifest's version, so a rebuilt bundle reloads).

    The scoring step calls this in each worker process, so a bundle is loaded once per process, not per
    task or per document, and never pickled with the pipeline.
    """
    folder = resolve_bundle_path(path).resolve()
    version = read_manifest(folder)["version"]
    key = (str(folder), version)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_bundle(folder)
        return _CACHE[key]
