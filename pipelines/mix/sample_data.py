"""Generated scored-document tables, for tests and benchmarks of dedup and mix.

They follow the scored-document contract of docs/architecture.md (column names, order and types), so the
stages see exactly what the curate stage writes. The texts are random word salad: fine for mixing and for
MinHash, which only need ids, scores, token counts and distinct texts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.parquet import scored_schema as shared_scored_schema
from pipelines.parquet import write_table_atomic

DIMENSIONS = ("care", "respect", "constructiveness", "virtue")

_WORDS = np.array(
    [
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "is",
        "it",
        "you",
        "that",
        "he",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
        "from",
        "or",
        "had",
        "by",
        "word",
        "but",
        "what",
        "some",
        "we",
        "can",
        "out",
        "other",
        "were",
        "all",
        "there",
        "when",
        "up",
        "use",
        "your",
        "how",
        "said",
        "an",
        "each",
        "she",
        "which",
        "do",
        "their",
        "time",
        "if",
        "will",
        "way",
        "about",
        "many",
        "then",
        "them",
        "write",
        "would",
        "like",
        "so",
        "these",
        "her",
        "long",
        "make",
        "thing",
        "see",
        "him",
        "two",
        "has",
        "look",
        "more",
        "day",
        "could",
        "go",
        "come",
        "did",
        "number",
        "sound",
        "no",
        "most",
        "people",
        "my",
        "over",
        "know",
        "water",
        "than",
        "call",
        "first",
        "who",
        "may",
        "down",
        "side",
        "been",
        "now",
        "find",
        "any",
        "new",
        "work",
        "part",
        "take",
        "get",
        "place",
        "made",
        "live",
        "where",
        "after",
        "back",
        "little",
        "only",
        "round",
        "man",
        "year",
        "came",
        "show",
        "every",
        "good",
        "me",
        "give",
        "our",
        "under",
        "name",
        "very",
        "through",
        "just",
        "form",
        "sentence",
        "great",
        "think",
        "say",
        "help",
        "low",
        "line",
        "differ",
        "turn",
        "cause",
        "much",
        "mean",
        "before",
        "move",
        "right",
        "boy",
        "old",
        "too",
        "same",
        "tell",
        "does",
        "set",
        "three",
        "want",
        "air",
        "well",
        "also",
        "play",
        "small",
        "end",
        "put",
        "home",
        "read",
        "hand",
        "port",
        "large",
        "spell",
        "add",
        "even",
        "land",
        "here",
        "must",
        "big",
        "high",
        "such",
        "follow",
        "act",
        "why",
        "ask",
        "kind",
        "care",
        "respect",
        "listen",
        "share",
        "hope",
        "fair",
        "honest",
    ]
)


def scored_schema(dimensions: tuple[str, ...] = DIMENSIONS) -> pa.Schema:
    """The shared scored-document schema (pipelines/parquet.py) for these dimensions."""
    return shared_scored_schema(dimensions)


def doc_id(url: str, text: str) -> str:
    """Same recipe as curate: sha256 of url + text, 32 hex chars."""
    return hashlib.sha256(f"{url}\n{text}".encode()).hexdigest()[:32]


def random_texts(n: int, rng: np.random.Generator, min_words: int = 30, max_words: int = 80) -> list[str]:
    lengths = rng.integers(min_words, max_words + 1, size=n)
    words = _WORDS[rng.integers(0, len(_WORDS), size=int(lengths.sum()))]
    out, start = [], 0
    for length in lengths:
        out.append(" ".join(words[start : start + length]))
        start += length
    return out


def make_scored_table(
    n: int,
    seed: int = 0,
    texts: list[str] | None = None,
    scores: dict[str, np.ndarray] | None = None,
    token_counts: np.ndarray | None = None,
    min_words: int = 30,
    max_words: int = 80,
    start: int = 0,
) -> pa.Table:
    """A scored table of `n` documents; pass `texts`/`scores`/`token_counts` to control them.

    Scores are Beta(2, 2) per dimension unless given; `prosocial` is their mean (the default profile).
    """
    rng = np.random.default_rng(seed)
    texts = texts if texts is not None else random_texts(n, rng, min_words, max_words)
    if len(texts) != n:
        raise ValueError(f"texts: expected {n}, got {len(texts)}")
    scores = dict(scores or {})
    for d in DIMENSIONS:
        scores.setdefault(d, rng.beta(2.0, 2.0, size=n))
    ps = {d: np.asarray(scores[d], dtype=np.float32) for d in DIMENSIONS}
    prosocial = np.mean(np.stack([ps[d].astype(np.float64) for d in DIMENSIONS]), axis=0).astype(np.float32)
    if token_counts is None:
        token_counts = np.array([max(1, int(len(t.split()) * 1.3)) for t in texts], dtype=np.int32)
    urls = [f"https://example.org/page/{start + i}" for i in range(n)]
    columns = {
        "id": [doc_id(u, t) for u, t in zip(urls, texts, strict=True)],
        "text": texts,
        "url": urls,
        "source": ["generated.jsonl"] * n,
        "source_offset": np.arange(start, start + n, dtype=np.int64),
        "crawl_date": ["2024-01-01"] * n,
        "language": ["en"] * n,
        "language_score": np.full(n, 0.99, dtype=np.float32),
        **{f"ps_{d}": ps[d] for d in DIMENSIONS},
        "prosocial": prosocial,
        "token_count": np.asarray(token_counts, dtype=np.int32),
        "dup_cluster_size": np.ones(n, dtype=np.int32),
        "classifier_version": ["test"] * n,
    }
    return pa.table(columns, schema=scored_schema())


def write_scored(folder: str | Path, table: pa.Table, files: int = 1) -> list[Path]:
    """Split `table` into `files` Parquet files `00000.parquet`, ... in `folder`."""
    folder = Path(folder)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    return [
        Path(write_table_atomic(table.slice(lo, hi - lo), folder / f"{i:05d}.parquet"))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]
