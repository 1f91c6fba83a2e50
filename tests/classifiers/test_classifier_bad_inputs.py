"""Mistakes users make with the classifier commands: each one is refused (or handled) with a message that
names the file, key or folder and what to do, before any work is lost or wasted."""

from __future__ import annotations

import gzip
import json
import shutil
import textwrap
import time

import pytest
from test_classifier_cli import TINY, _make_source

from classifiers.bundle import BundleError, load_bundle, manifest_version
from classifiers.recipes import RecipeError, load_recipe, load_source
from classifiers.testing import make_tiny_bundle, tiny_seed_data
from pipelines.cli import main as corpus

KIND = "Thank you so much, I hope you feel better soon. Happy to help, you are welcome."
HOSTILE = "You are a stupid worthless idiot and I hate you, shut up, loser."


def _train_args(root):
    return ["classifier", "train", "--seeds", str(root / "seeds"), "--recipes", str(root / "recipes"), *TINY]


# ------------------------------------------------------------------------------------------- train --out


def test_train_never_deletes_a_folder_that_is_not_a_bundle(tmp_path, capsys, monkeypatch):
    _make_source(tmp_path, "toy")
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("a week of work")
    assert corpus([*_train_args(tmp_path), "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "not empty and holds no classifier bundle" in err
    assert (data / "notes.txt").read_text() == "a week of work"

    # `--out .` in a working folder: the folder and its files stay
    work = tmp_path / "work"
    work.mkdir()
    (work / "draft.md").write_text("keep me")
    monkeypatch.chdir(work)
    assert corpus([*_train_args(tmp_path), "--out", "."]) == 2
    assert str(work) in capsys.readouterr().err
    assert (work / "draft.md").read_text() == "keep me"

    # a file is not a bundle folder either
    (tmp_path / "file").write_text("x")
    assert corpus([*_train_args(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "x"


def test_train_replaces_an_older_bundle_or_an_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    make_tiny_bundle(empty, dimensions=("care",))
    assert load_bundle(empty).dimensions == ["care"]
    make_tiny_bundle(empty, dimensions=("respect",))  # a bundle is replaced by the new one
    assert load_bundle(empty).dimensions == ["respect"]
    assert not (empty / "care.bin").exists()


# ------------------------------------------------------------------------------------------- seeds


def test_a_missing_seeds_folder_fails_at_once_naming_it(tmp_path, capsys):
    missing = tmp_path / "labelled"  # the shipped recipes all have hub ids: the hub must not be tried
    started = time.monotonic()
    code = corpus(["classifier", "train", "--seeds", str(missing), "--out", str(tmp_path / "b")])
    assert code == 2 and time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert f"seeds folder {missing} not found" in err and "'hub'" in err


def test_hub_fallback_error_names_the_missing_local_folder(tmp_path):
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(
        textwrap.dedent(
            f"""
            name: r
            license: MIT
            commercial: true
            local: {{folder: r-data, builder: csv, splits: {{all: [d.csv]}}}}
            hub: {{path: {tmp_path / "no-such-hub-dataset"}, splits: {{all: train}}}}
            text: text
            labels: {{care: {{positive: {{column: label, eq: 1}}}}}}
            """
        )
    )
    recipe = load_recipe(recipe_path)
    (tmp_path / "seeds").mkdir()
    with pytest.raises(RecipeError) as info:
        load_source(recipe, tmp_path / "seeds")
    message = str(info.value)
    assert f"local folder {tmp_path / 'seeds' / 'r-data'} not found" in message
    assert "cannot load hub dataset" in message and "r.yaml" in message


def _csv_recipe(root, files):
    folder = root / "seeds" / "src"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    path = root / "src.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: src
            license: MIT
            commercial: true
            local: {{folder: src, builder: csv, splits: {{all: {sorted(files)}}}}}
            text: text
            labels: {{care: {{positive: {{column: label, eq: 1}}, negative: {{column: label, eq: 0}}}}}}
            """
        )
    )
    return load_recipe(path)


GOOD = b"text,label\nthank you,1\nshut up,0\n"


@pytest.mark.parametrize(
    ("files", "hint"),
    [
        ({"a.csv": GOOD, "b.csv": b""}, "empty file"),
        ({"b.csv": b"text,label\n"}, "no data rows"),  # beside a file with rows it just adds none
        ({"a.csv": GOOD, "b.csv": b"text,label\ncaf\xe9 au lait,1\n"}, "not UTF-8"),
    ],
    ids=["empty", "header-only", "latin-1"],
)
def test_bad_seed_files_are_named(tmp_path, files, hint):
    recipe = _csv_recipe(tmp_path, files)
    with pytest.raises(RecipeError) as info:
        load_source(recipe, tmp_path / "seeds")
    message = str(info.value)
    assert "src.yaml" in message and hint in message
    assert str(tmp_path / "seeds" / "src" / "b.csv") in message and "a.csv" not in message


# ------------------------------------------------------------------------------------------- recipes


def test_a_mistyped_dimension_in_a_recipe_is_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: typo
            license: MIT
            commercial: true
            local: {folder: typo, builder: csv, splits: {all: [d.csv]}}
            text: text
            labels:
              care: {positive: {column: label, eq: 1}}
              respekt: {negative: {column: label, eq: 0}}
            """
        )
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "typo.yaml" in message and "labels.respekt" in message
    assert "did you mean 'respect'?" in message and "constructiveness" in message


# ------------------------------------------------------------------------------------------- licences


def test_licence_filter_that_drops_a_dimension_warns(tmp_path, capsys):
    _make_source(tmp_path, "open", commercial=True, seed=0, dimensions=("respect", "care"))
    _make_source(tmp_path, "closed", commercial=False, seed=1, dimensions=("constructiveness",))
    out = tmp_path / "commercial"
    assert corpus([*_train_args(tmp_path), "--licenses", "commercial", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "no source for constructiveness (excluded: closed)" in err
    manifest = load_bundle(out).manifest
    assert manifest["dimensions"] == ["care", "respect"]
    assert any("constructiveness" in w for w in manifest["warnings"])
    assert "no source for constructiveness" in (out / "README.md").read_text()

    # every selected source excluded: say so, not "no recipes selected"
    code = corpus(
        [
            *_train_args(tmp_path),
            "--licenses",
            "commercial",
            "--sources",
            "closed",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "--licenses commercial excludes every selected source (closed" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- eval


def test_eval_refuses_dimensions_the_bundle_lacks_before_any_work(tiny_bundle_path, tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    base = ["classifier", "eval", "--seeds", str(tmp_path), "--recipes", str(tmp_path / "recipes")]
    assert corpus([*base, "--model", str(tiny_bundle_path), "--dimensions", "resepct", "care"]) == 2
    err = capsys.readouterr().err
    assert "['resepct']" in err and "care, constructiveness, respect, virtue" in err
    assert "did you mean respect?" in err

    care_only = make_tiny_bundle(tmp_path / "care-only", dimensions=("care",))
    assert corpus([*base, "--model", str(care_only), "--dimensions", "virtue"]) == 2
    assert "['virtue']: not in bundle" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- score


def test_score_reads_gzip_and_zstd_input(tiny_bundle_path, tmp_path, capsys):
    zstandard = pytest.importorskip("zstandard")
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate([KIND, HOSTILE, KIND]))
    plain = tmp_path / "in.jsonl"
    plain.write_text(lines)
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "in.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    outputs = {}
    for name in ("in.jsonl", "in.jsonl.gz", "in.jsonl.zst"):
        out = tmp_path / f"{name}.out"
        args = ["score", "--model", str(tiny_bundle_path), "--input", str(tmp_path / name)]
        assert corpus([*args, "--output", str(out)]) == 0
        assert "scored 3 texts" in capsys.readouterr().err
        outputs[name] = out.read_text()
    assert outputs["in.jsonl"] == outputs["in.jsonl.gz"] == outputs["in.jsonl.zst"]
    assert all("error" not in json.loads(line) for line in outputs["in.jsonl.gz"].splitlines())

    # a truncated archive is an error naming the file, and leaves no output behind
    damaged = tmp_path / "cut.jsonl.gz"
    damaged.write_bytes(gzip.compress(lines.encode() * 50)[:-30])
    out = tmp_path / "cut.out"
    assert (
        corpus(["score", "--model", str(tiny_bundle_path), "--input", str(damaged), "--output", str(out)])
        == 2
    )
    assert f"{damaged}: gzip input damaged or truncated" in capsys.readouterr().err
    assert not out.exists()


def test_score_refuses_an_output_folder_and_a_model_file_up_front(tiny_bundle_path, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": 1, "text": KIND}) + "\n")
    folder = tmp_path / "results"
    folder.mkdir()
    args = ["score", "--model", str(tiny_bundle_path), "--input", str(inp)]
    assert corpus([*args, "--output", str(folder)]) == 2
    assert f"--output {folder} is a folder" in capsys.readouterr().err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl",
        "results",
    ]

    model_file = tiny_bundle_path / "care.bin"
    assert (
        corpus(["score", "--model", str(model_file), "--input", str(inp), "--output", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{model_file} is a file" in err and str(tiny_bundle_path) in err


# ------------------------------------------------------------------------------------------- bundle


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda m: m["models"]["care"].update(threshold="high"), "models.care.threshold"),
        (lambda m: m["models"]["respect"]["calibration"].update(b="0.3x"), "models.respect.calibration.b"),
        (lambda m: m["models"]["virtue"].update(threshold=None), "models.virtue.threshold"),
    ],
    ids=["threshold", "calibration", "null"],
)
def test_non_numeric_manifest_values_are_bundle_errors(tiny_bundle_path, tmp_path, edit, key):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"manifest.json: {key} must be a number"):
        load_bundle(copy)


# ------------------------------------------------------------------------------------------- tiny data


def test_a_model_too_small_to_measure_is_reported(tmp_path):
    from classifiers.train import TrainParams, train_bundle

    params = TrainParams(dim=16, bucket=40_000, quantize=False, min_per_source=0, self_pretrain=False)
    params.per_dimension = {}
    for n, problem in ((10, "no ROC-AUC to validate it"), (12, "calibration left at identity")):
        messages: list[str] = []
        data = tiny_seed_data(n=n, dimensions=("care",))
        train_bundle(data, tmp_path / f"b{n}", params, name="t", log=messages.append)
        warnings = [m for m in messages if "WARNING" in m]
        assert len(warnings) == 1 and "care: too few labelled rows to measure this model" in warnings[0]
        assert problem in warnings[0], warnings
