"""Helpers for tests (ours and other packages'): a real but tiny fastText bundle trained in about a second.

Other stages' tests need a bundle with the real format, real fastText models and real scoring code, without
reading ../shared/data or the shipped default. `make_tiny_bundle(folder)` generates texts from small word
lists, trains the same way `corpus classifier train` does (same writer, manifest and card), and returns the
bundle folder. Kind texts ("thank you, I hope you feel better, happy to help") score high on every
dimension, hostile ones ("you are a stupid worthless idiot, I hate you") low.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifiers.dataset import DimensionData, Example, SeedData
from classifiers.normalize import normalize

KIND_WORDS = [
    "thank",
    "you",
    "thanks",
    "grateful",
    "appreciate",
    "kind",
    "kindness",
    "support",
    "help",
    "helpful",
    "hope",
    "hopeful",
    "care",
    "caring",
    "love",
    "welcome",
    "please",
    "respect",
    "respectful",
    "agree",
    "understand",
    "listen",
    "together",
    "fair",
    "honest",
    "honestly",
    "generous",
    "patient",
    "because",
    "evidence",
    "reason",
    "suggest",
    "solution",
    "consider",
    "perhaps",
    "glad",
    "happy",
    "wonderful",
    "encourage",
    "better",
    "well",
    "friend",
    "friendly",
    "sorry",
    "forgive",
    "share",
    "learn",
]
HOSTILE_WORDS = [
    "hate",
    "stupid",
    "idiot",
    "idiots",
    "worthless",
    "disgusting",
    "pathetic",
    "liar",
    "lies",
    "shut",
    "up",
    "moron",
    "dumb",
    "trash",
    "ugly",
    "loser",
    "garbage",
    "kill",
    "attack",
    "despise",
    "fool",
    "shameful",
    "cheat",
    "selfish",
    "cruel",
    "greedy",
    "lazy",
    "scum",
    "vile",
    "rude",
    "nonsense",
]
NEUTRAL_WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "on",
    "for",
    "with",
    "as",
    "was",
    "at",
    "by",
    "this",
    "from",
    "or",
    "an",
    "be",
    "are",
    "have",
    "not",
    "you",
    "i",
    "we",
    "they",
    "today",
    "weather",
    "city",
    "report",
    "train",
    "meeting",
    "page",
    "article",
    "number",
    "data",
    "market",
    "season",
    "game",
    "phone",
    "road",
    "house",
    "water",
    "paper",
    "table",
    "window",
    "music",
    "film",
    "book",
    "story",
]
TINY_DIMENSIONS = ("care", "respect", "constructiveness", "virtue")


def tiny_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`n` generated texts and their 0/1 labels (half kind, half hostile, with neutral filler)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.zeros(n)
    for i in range(n):
        positive = i % 2 == 0
        lexicon = KIND_WORDS if positive else HOSTILE_WORDS
        words = list(rng.choice(NEUTRAL_WORDS, size=int(rng.integers(4, 12))))
        words += list(rng.choice(lexicon, size=int(rng.integers(2, 5))))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels[i] = 1.0 if positive else 0.0
    return texts, labels


def tiny_seed_data(n: int = 400, dimensions: tuple[str, ...] = TINY_DIMENSIONS, seed: int = 0) -> SeedData:
    dims = {}
    for index, dim in enumerate(dimensions):
        texts, labels = tiny_texts(n, seed=seed + index)
        examples = [Example(normalize(t), float(y), "tiny") for t, y in zip(texts, labels, strict=True)]
        cut_cal, cut_eval = int(n * 0.7), int(n * 0.85)
        dims[dim] = DimensionData(
            train=examples[:cut_cal], calib=examples[cut_cal:cut_eval], eval={"tiny": examples[cut_eval:]}
        )
    return SeedData(dimensions=dims, sources=[], counts={})


def make_tiny_bundle(
    folder: str | Path, dimensions: tuple[str, ...] = TINY_DIMENSIONS, quantize: bool = False
) -> Path:
    """Train a tiny real fastText bundle into `folder` (created; replaced if it exists). Returns the folder."""
    from classifiers.train import TrainParams, train_bundle

    params = TrainParams(
        dim=16,
        epoch=10,
        lr=0.2,
        wordNgrams=2,
        bucket=40_000,
        quantize=quantize,
        chunk_words=40,
        max_per_source=10_000,
        min_per_source=0,
        self_pretrain=False,
        per_dimension={},
    )
    return train_bundle(
        tiny_seed_data(dimensions=dimensions), folder, params, name="tiny", log=lambda _msg: None
    )
