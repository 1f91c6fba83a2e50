"""Real-data checks on ../shared/data/labeled (skipped when it is missing)."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.bundle import default_bundle_path, load_bundle
from classifiers.dataset import build_seed_data, overlap_key
from classifiers.profiles import load_profile
from classifiers.recipes import load_recipes

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def seeds(shared_data):
    recipes = load_recipes(names=["hope-edi-en", "davidson-hate-offensive", "sfu-ctc"])
    return build_seed_data(recipes, shared_data / "labeled", log=lambda _m: None)


@pytest.fixture(scope="module")
def default_bundle():
    assert (default_bundle_path() / "manifest.json").is_file(), "the shipped default bundle is missing"
    return load_bundle("default")


def _paragraph(texts, words):
    tokens = []
    for text in texts:
        tokens += text.split(" ")
        if len(tokens) >= words:
            break
    return " ".join(tokens[:words])


def test_real_sources_split_without_leaks(seeds):
    respect = seeds.dimensions["respect"]
    train = {e.text for e in respect.train} | {e.text for e in respect.calib}
    assert respect.eval["davidson-hate-offensive"] and respect.eval["sfu-ctc"]
    assert not train & {e.text for ex in respect.eval.values() for e in ex}
    assert not {overlap_key(t) for t in train} & {
        overlap_key(e.text) for ex in respect.eval.values() for e in ex
    }
    hope_eval = seeds.dimensions["care"].eval["hope-edi-en"]
    assert {e.target for e in hope_eval} == {0.0, 1.0}  # for care, "non-hope" is absence of care
    davidson = {e.target for e in respect.eval["davidson-hate-offensive"]}
    assert davidson == {0.0, 0.5}  # "neither" is neutral, not positive


def test_one_hateful_paragraph_lowers_a_kind_page(seeds, default_bundle):
    """A mostly kind page (hope speech) plus one hateful paragraph (Davidson hate) scores below the page alone."""
    rng = np.random.default_rng(0)
    words = default_bundle.chunk_words
    kind = [e.text for e in seeds.dimensions["care"].eval["hope-edi-en"] if e.target == 1.0]
    hate = [e.text for e in seeds.dimensions["respect"].eval["davidson-hate-offensive"] if e.target == 0.0]
    profile = load_profile("default")
    clean, dirty = [], []
    for _ in range(20):
        paragraphs = [_paragraph([kind[i] for i in rng.permutation(len(kind))], words) for _ in range(5)]
        hateful = _paragraph([hate[i] for i in rng.permutation(len(hate))], words)
        at = int(rng.integers(0, len(paragraphs) + 1))
        clean.append("\n\n".join(paragraphs))
        dirty.append("\n\n".join(paragraphs[:at] + [hateful] + paragraphs[at:]))
    s_clean, s_dirty = default_bundle.score(clean), default_bundle.score(dirty)
    assert np.all(s_dirty["respect"] < s_clean["respect"])
    assert np.all(profile.aggregate(s_dirty) < profile.aggregate(s_clean))
