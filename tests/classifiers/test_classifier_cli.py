"""`corpus classifier train` and `corpus classifier eval` end to end on a self-made labelled source."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest

from classifiers.bundle import load_bundle
from classifiers.testing import tiny_texts
from pipelines.cli import main as corpus


def _make_source(root, name="toy", commercial=True, n=600, seed=0, dimensions=("respect", "care")):
    folder = root / "seeds" / name
    folder.mkdir(parents=True)
    texts, labels = tiny_texts(n, seed=seed)
    lines = ["text,label"] + [f"{t},{int(y)}" for t, y in zip(texts, labels, strict=True)]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    recipes = root / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / f"{name}.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {name}
            license: {"MIT" if commercial else "CC BY-NC 4.0"}
            commercial: {str(commercial).lower()}
            citation: 'generated test data'
            local: {{folder: {name}, builder: csv, splits: {{all: [data.csv]}}}}
            text: text
            labels:
            """
        )
        + "".join(
            f"  {d}: {{positive: {{column: label, eq: 1}}, negative: {{column: label, eq: 0}}}}\n"
            for d in dimensions
        )
    )


TINY = ["--param", "dim=16", "--param", "bucket=20000", "--param", "epoch=10", "--param", "quantize=false"]


def test_train_eval_and_license_filter(tmp_path, capsys):
    _make_source(tmp_path, "open", commercial=True, seed=0)
    _make_source(tmp_path, "closed", commercial=False, seed=1)
    args = ["--seeds", str(tmp_path / "seeds"), "--recipes", str(tmp_path / "recipes")]
    out = tmp_path / "bundle"
    assert corpus(["classifier", "train", *args, "--out", str(out), *TINY, "--param", "care.epoch=12"]) == 0
    bundle = load_bundle(out)
    assert bundle.dimensions == ["care", "respect"]
    manifest = bundle.manifest
    assert {s["name"] for s in manifest["sources"]} == {"open", "closed"}
    assert manifest["models"]["care"]["fasttext_args"]["epoch"] == 12
    card = (out / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "closed" in card

    commercial = tmp_path / "commercial"
    assert (
        corpus(["classifier", "train", *args, "--out", str(commercial), "--licenses", "commercial", *TINY])
        == 0
    )
    assert [s["name"] for s in load_bundle(commercial).manifest["sources"]] == ["open"]

    report = tmp_path / "report.json"
    both = tmp_path / "both.yaml"
    both.write_text("weights: {care: 1.0, respect: 1.0}\ntiers: [{name: all, min_score: 0.0, factor: 1.0}]\n")
    profiles = ["--profiles", str(both), "default"]  # `default` weights dimensions this bundle lacks
    assert (
        corpus(
            ["classifier", "eval", *args, "--model", str(out), "--no-minilm", "--loso", *profiles]
            + ["--json", str(report)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "profile 'default' weights dimensions the bundle lacks" in printed
    data = json.loads(report.read_text())
    for dim in ("care", "respect"):
        for source in ("open", "closed"):
            ft = data["results"][dim]["fasttext"][source]
            tfidf = data["results"][dim]["tfidf-lr"][source]
            assert ft["auc"] > 0.9 and tfidf["auc"] > 0.9
            assert {"f1", "ece", "n_pos", "n_neg"} <= set(ft)
        assert set(data["loso"][dim]["fasttext"]) == {"open", "closed"}
        for source in ("open", "closed"):
            tracked = data["profiles"][dim][source]
            assert set(tracked) == {"dimension", "prosocial[both]"}
            assert tracked["dimension"] > 0.9 and tracked["prosocial[both]"] > 0.9
    assert data["throughput"]["fasttext"] > 0 and data["throughput"]["tfidf-lr"] > 0
    assert "| care | open |" in printed and "prosocial[both] AUC" in printed

    # tuning runs score the calibration split, so the evaluation split stays unseen
    tuned = tmp_path / "calib.json"
    calib_args = [
        "--model",
        str(out),
        "--no-baselines",
        "--profiles",
        "--split",
        "calib",
        "--json",
        str(tuned),
    ]
    assert corpus(["classifier", "eval", *args, *calib_args, "--markdown", str(tmp_path / "c.md")]) == 0
    calib = json.loads(tuned.read_text())
    assert calib["split"] == "calib" and "CALIBRATION splits" in (tmp_path / "c.md").read_text()
    for source in ("open", "closed"):
        on_calib, on_eval = (
            calib["results"]["care"]["fasttext"][source],
            data["results"]["care"]["fasttext"][source],
        )
        counts = manifest["sources"][[s["name"] for s in manifest["sources"]].index(source)]["counts"]
        assert on_calib["n_pos"] + on_calib["n_neg"] == counts["calib"] != counts["eval"]
        assert on_eval["n_pos"] + on_eval["n_neg"] == counts["eval"]

    # a bundle trained around other evaluation splits (here: a source added since) is not reported as held-out
    _make_source(tmp_path, "added", commercial=True, seed=2)
    other = ["--model", str(commercial), "--no-baselines", "--markdown", str(tmp_path / "m.md")]
    assert corpus(["classifier", "eval", *args, *other]) == 2
    assert "refusing to report such scores as held-out" in capsys.readouterr().err
    assert corpus(["classifier", "eval", *args, *other, "--allow-split-mismatch"]) == 0
    assert "evaluation splits DIFFERENT from those the bundle was trained" in (tmp_path / "m.md").read_text()


def test_one_dimension_retrain_reproduces_the_full_build(tmp_path):
    """Self-pretrained vectors come from every dimension's texts, so tuning one dimension alone is faithful."""
    _make_source(tmp_path, "open", commercial=True, seed=0)
    _make_source(tmp_path, "respect-only", seed=1, dimensions=("respect",))  # texts care never trains on
    args = ["--seeds", str(tmp_path / "seeds"), "--recipes", str(tmp_path / "recipes"), *TINY]
    args += ["--param", "care.self_pretrain=true", "--param", "pretrain_epoch=1"]
    assert corpus(["classifier", "train", *args, "--out", str(tmp_path / "full")]) == 0
    assert (
        corpus(["classifier", "train", *args, "--dimensions", "care", "--out", str(tmp_path / "care")]) == 0
    )
    full, alone = (load_bundle(tmp_path / name).manifest["models"]["care"] for name in ("full", "care"))
    assert full["pretrained_vectors"]["sha256"] == alone["pretrained_vectors"]["sha256"]
    assert full["sha256"] == alone["sha256"]


def test_train_reports_bad_recipes(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "bad.yaml").write_text("name: bad\n")
    code = corpus(
        [
            "classifier",
            "train",
            "--seeds",
            str(tmp_path),
            "--recipes",
            str(tmp_path / "recipes"),
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert code == 2 and "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert sorted((tmp_path / "recipes").iterdir()) == [
        tmp_path / "recipes" / "bad.yaml"
    ]  # nothing left beside it


def test_train_refuses_overrides_for_dimensions_it_does_not_train(tmp_path, capsys):
    """`respect.epoch=3` on a care-only build would be ignored; the user meant something else."""
    _make_source(tmp_path, "toy")
    args = ["--seeds", str(tmp_path / "seeds"), "--recipes", str(tmp_path / "recipes"), *TINY]
    out = tmp_path / "b"
    code = corpus(
        [
            "classifier",
            "train",
            *args,
            "--dimensions",
            "care",
            "--param",
            "respect.epoch=3",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert (
        "dimensions ['respect'] that this run does not train (training: ['care'])" in capsys.readouterr().err
    )
    assert not out.exists()


def _write_annotations(folder, n=600):
    """Hand-made rubric labels in the layout `corpus classifier annotate` writes: labels.parquet (0-5 scores)
    plus a recipe.yaml whose `local.folder` is the folder itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    texts, labels = tiny_texts(n, seed=3)
    scores = [5 if y else 0 for y in labels]
    scores[::7] = [2] * len(scores[::7])  # some neutral rows
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "text": texts,
            "epistemic_humility": pa.array(scores, type=pa.int8()),
        }
    )
    pq.write_table(table, folder / "labels.parquet")
    (folder / "recipe.yaml").write_text(
        textwrap.dedent(
            """
            name: llm-annotations-hand
            license: as the annotated source documents
            commercial: false
            citation: hand-made test labels
            local: {folder: ".", builder: parquet, splits: {all: [labels.parquet]}}
            text: text
            labels:
              epistemic_humility:
                positive: {column: epistemic_humility, ge: 3}
                negative: {column: epistemic_humility, le: 1}
                neutral: [{column: epistemic_humility, gt: 1}, {column: epistemic_humility, lt: 3}]
            """
        )
    )


def test_train_cli_accepts_a_rubric_dimension_with_labels(tmp_path, capsys):
    labels = tmp_path / "annotations"
    _write_annotations(labels)
    base = ["classifier", "train", "--seeds", str(labels), "--recipes", str(labels), *TINY]

    # without --dimensions only human-seeded dimensions are trained: this source has none
    assert corpus([*base, "--out", str(tmp_path / "none")]) == 2
    assert "--dimensions" in capsys.readouterr().err and not (tmp_path / "none").exists()

    out = tmp_path / "rubric"
    assert corpus([*base, "--out", str(out), "--dimensions", "epistemic_humility"]) == 0
    bundle = load_bundle(out)
    assert bundle.dimensions == ["epistemic_humility"]
    assert [s["name"] for s in bundle.manifest["sources"]] == ["llm-annotations-hand"]
    kind, hostile = tiny_texts(2, seed=11)[0]
    scores = bundle.score([kind, hostile])["epistemic_humility"]
    assert scores[0] > scores[1]
    auc = bundle.manifest["models"]["epistemic_humility"]["metrics"]["eval/llm-annotations-hand"]["auc"]
    assert auc > 0.9

    # a name outside the taxonomy, or a dimension without labels, is refused with a clear message
    capsys.readouterr()
    assert corpus([*base, "--out", str(tmp_path / "x"), "--dimensions", "kindness"]) == 2
    assert "not in the taxonomy" in capsys.readouterr().err
    assert corpus([*base, "--out", str(tmp_path / "y"), "--dimensions", "pluralism"]) == 2
    assert "no training data for dimensions ['pluralism']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_baselines_learn_from_neutral_rows_as_fasttext_does():
    """Neutral rows (0.5) are half positive, half negative for the baselines too, with balanced classes."""
    from classifiers.baselines import TfidfBaseline, soft_rows

    index, y, weight = soft_rows(np.array([1.0, 0.0, 0.5, 0.0]))
    assert sorted(zip(index.tolist(), y.tolist(), strict=True)) == [(0, 1), (1, 0), (2, 0), (2, 1), (3, 0)]
    assert abs(weight[y == 1].sum() - weight[y == 0].sum()) < 1e-9
    # a source with negatives and neutral rows only: the baseline must still learn "neutral above negative"
    hostile = [f"you are a stupid idiot number {i} and everyone hates you" for i in range(40)]
    calm = [f"the council meets on tuesday {i} to discuss the library budget" for i in range(40)]
    model = TfidfBaseline().fit(hostile + calm, np.r_[np.zeros(40), np.full(40, 0.5)])
    scores = model.predict(["what a stupid idiot", "the library budget meeting"])
    assert scores[1] > scores[0]


def test_param_overrides_are_checked():
    """A typo in an override must stop the build, not train a week's bundle with the default silently kept."""
    from classifiers.train_cli import parse_params

    params = parse_params(["constructiveness.length_scaled_logit=false", "epoch=7", "qretrain=yes"])
    assert params.for_dimension("constructiveness").length_scaled_logit is False
    assert params.for_dimension("care").length_scaled_logit is True
    assert params.epoch == 7 and params.qretrain is True
    for bad, message in [
        ("quantize=maybe", "expected one of true, 1, yes, false, 0, no"),
        ("cares.epoch=3", "unknown dimension 'cares'"),
        ("epoch=three", "expected a int"),
        ("epochs=3", "expected [DIMENSION.]KEY=VALUE"),
    ]:
        with pytest.raises(SystemExit, match=re.escape(message)):
            parse_params([bad])
