"""Seed recipes on self-made sources: rules, neutral handling, licences, dedup across splits, balance."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from classifiers.dataset import Example, balance, build_seed_data, overlap_key
from classifiers.normalize import chunk_tokens, normalize
from classifiers.recipes import RECIPE_DIR, RecipeError, label_source, load_recipe, load_recipes, load_source
from classifiers.train import binary_metrics, fasttext_line


def _write_source(root):
    folder = root / "toy"
    folder.mkdir(parents=True)
    rows = ["text,score,flag"]
    for i in range(40):
        rows.append(f"polite request number {i} please thank you,{2.0 + i / 10},0")
        rows.append(f"rude demand number {i} now idiot,{-2.0 - i / 10},1")
        rows.append(f"plain statement number {i},0.0,0")
    rows.append("shared text in both splits,3.0,0")
    rows.append("Kind dev thanks!!! 🙂 #grateful,3.0,0")  # the dev text, reposted with emoji and a hashtag
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "dev.csv").write_text(
        "text,score,flag\nshared text in both splits,3.0,0\nrude dev idiot,-3.0,1\nkind dev thanks grateful,3.0,0\n"
    )
    recipe = root / "toy.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            name: toy
            license: CC BY-NC 4.0
            commercial: false
            local:
              folder: toy
              builder: csv
              splits: {train: [train.csv], dev: [dev.csv]}
            eval_split: dev
            text: text
            labels:
              respect:
                positive: {column: score, ge_quantile: 0.75}
                negative: [{column: flag, eq: 1}, {column: score, lt: 0}]
                neutral: rest
            """
        )
    )
    return recipe


def test_rules_quantiles_and_neutral(tmp_path):
    recipe = load_recipe(_write_source(tmp_path))
    rows = label_source(recipe, load_source(recipe, tmp_path))
    targets = dict(zip(rows.texts, rows.targets["respect"], strict=True))
    assert targets["rude demand number 3 now idiot"] == 0.0
    assert targets["plain statement number 3"] == 0.5  # neutral is soft, never positive
    assert targets["polite request number 39 please thank you"] == 1.0
    assert targets["polite request number 0 please thank you"] == 0.5  # below the top quartile


def test_eval_texts_never_reach_training(tmp_path):
    recipe = load_recipe(_write_source(tmp_path))
    data = build_seed_data([recipe], tmp_path, log=lambda _m: None).dimensions["respect"]
    train_texts = {e.text for e in data.train} | {e.text for e in data.calib}
    eval_texts = {e.text for e in data.eval["toy"]}
    assert normalize("shared text in both splits") in eval_texts
    assert not train_texts & eval_texts
    assert len(data.eval["toy"]) == 3
    # a repost differing only in punctuation, emoji and '#' counts as the same text: kept out of training
    assert not {overlap_key(t) for t in train_texts} & {overlap_key(t) for t in eval_texts}
    assert not any("grateful" in t for t in train_texts)


def test_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlicense: x\n")
    with pytest.raises(RecipeError, match="bad.yaml: key 'commercial'"):
        load_recipe(bad)
    recipe = load_recipe(_write_source(tmp_path))
    with pytest.raises(RecipeError, match="not found"):
        load_source(recipe, tmp_path / "elsewhere")
    recipe.labels["respect"]["negative"] = {"column": "nope", "eq": 1}
    with pytest.raises(RecipeError, match="column 'nope'"):
        label_source(recipe, load_source(recipe, tmp_path))


def test_shipped_recipes_validate_and_license_filter():
    recipes = load_recipes(RECIPE_DIR)
    assert len(recipes) >= 10
    commercial = load_recipes(RECIPE_DIR, licenses="commercial")
    assert 0 < len(commercial) < len(recipes) and all(r.commercial for r in commercial)
    assert "sfu-ctc" not in {r.name for r in commercial}
    dims = {d for r in recipes for d in r.dimensions}
    assert dims == {"care", "respect", "constructiveness", "virtue"}
    with pytest.raises(RecipeError):
        load_recipes(RECIPE_DIR, licenses="some")


def test_neutral_vs_negative_sets_report_ranking_only():
    scores = np.array([0.6, 0.55, 0.4, 0.3, 0.5])
    ranking = binary_metrics(scores, np.array([0.5, 0.5, 0.0, 0.0, 0.5]), 0.5)
    # neutral rows were learnt as P = 0.5: F1/ECE against a relabelled 1.0 would measure nothing
    assert set(ranking) == {"n_pos", "n_neg", "auc"} and ranking["auc"] == 1.0 and ranking["n_pos"] == 3
    hard = binary_metrics(scores, np.array([1.0, 1.0, 0.0, 0.0, 0.5]), 0.5)
    assert {"auc", "f1", "ece"} <= set(hard) and hard[
        "n_pos"
    ] == 2  # neutral rows left out when positives exist


def test_soft_labels_and_balance():
    assert fasttext_line(Example("a b", 1.0, "s")) == "__label__1 a b"
    # neutral: one line per label, so every pass teaches exactly P = 0.5 (not a coin flip per visit)
    assert fasttext_line(Example("a b", 0.5, "s")) == "__label__1 a b\n__label__0 a b"
    assert (
        fasttext_line(Example("a b", 0.2, "s"))
        == "__label__1 __label__0 __label__0 __label__0 __label__0 a b"
    )
    assert fasttext_line(Example("a b", 0.0, "s")) == "__label__0 a b"
    examples = [Example(f"pos {i}", 1.0, "s") for i in range(10)] + [
        Example(f"neg {i}", 0.0, "s") for i in range(40)
    ]
    out = balance(examples, max_per_source=1000, max_repeat=10, seed=0)
    pos = sum(e.target for e in out)
    assert 30 <= pos <= 50 and sum(1 - e.target for e in out) == 40
    assert balance(list(reversed(examples)), 1000, 10, 0) == out  # order-independent, deterministic
    assert len(balance(examples, max_per_source=20, max_repeat=1, seed=0)) == 20


def test_normalisation_removes_source_fingerprints():
    assert normalize("RT @user: Thanks!!!!!! &amp; see http://x.co/a [NAME]") == "thanks ! ! ! & see"
    assert normalize("He said 2015 — “fine”.") == "he said 0000 — “ fine ” ."
    assert "\n" not in normalize("a\nb\tc") and normalize("__label__1 x") == "0 x"
    assert chunk_tokens("a b c d e f g h i j k l m", 6) == ["a b c d e f", "g h i j k l m"]
    assert np.all([len(c.split()) <= 4 for c in chunk_tokens(" ".join("w" * 10), 3)])


def test_merged_duplicates_remember_every_source():
    """Leave-one-source-out drops a merged text when any of its sources is held out, not only the first."""
    from classifiers.dataset import Example, _merge

    merged = _merge(
        [Example("same text", 1.0, "a"), Example("same text", 0.0, "b"), Example("other", 1.0, "b")]
    )
    by_text = {e.text: e for e in merged}
    assert by_text["same text"].target == 0.5 and by_text["same text"].source == "a"
    assert by_text["same text"].also == ("b",) and by_text["other"].also == ()
