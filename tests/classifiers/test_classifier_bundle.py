"""The bundle API: loading, scoring, content-hash version, and clear errors instead of C++ crashes."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from classifiers.bundle import BundleError, default_bundle_path, load_bundle, manifest_version
from classifiers.testing import make_tiny_bundle

KIND = "Thank you so much, I hope you feel better soon. Happy to help, you are welcome."
HOSTILE = "You are a stupid worthless idiot and I hate you, shut up, loser."


def test_score_shapes_ranges_and_order(tiny_bundle):
    scores = tiny_bundle.score([KIND, HOSTILE, "", "the weather report"])
    assert (
        sorted(scores) == sorted(tiny_bundle.dimensions) == ["care", "constructiveness", "respect", "virtue"]
    )
    for dim, values in scores.items():
        assert values.dtype == np.float32 and values.shape == (4,)
        assert np.all((values >= 0) & (values <= 1)), dim
        assert values[0] > 0.8 > 0.2 > values[1], (dim, values)


def test_empty_batch_and_string_misuse(tiny_bundle):
    assert all(v.shape == (0,) for v in tiny_bundle.score([]).values())
    with pytest.raises(TypeError):
        tiny_bundle.score(KIND)


def test_long_documents_are_scored_by_chunks(tiny_bundle):
    page = " ".join([KIND] * 30)  # many chunks of 40 words
    chunks, offsets = tiny_bundle.chunk([page, KIND])
    assert offsets.tolist()[0] == 0 and offsets[1] > 3
    with_hate = page + " " + HOSTILE * 3
    scores = tiny_bundle.score([page, with_hate])
    assert all(scores[d][1] < scores[d][0] for d in tiny_bundle.dimensions)


def test_very_long_documents_are_sampled_as_whole_windows(tiny_bundle):
    """Past max_chunks windows, whole windows are sampled evenly from start to end (not every k-th word)."""
    words, most = tiny_bundle.chunk_words, tiny_bundle.max_chunks
    n = words * most * 7 + 5

    def word(i: int) -> str:  # distinct words without digits (normalisation maps digits to 0)
        return "w" + "".join(chr(97 + int(d)) for d in str(i))

    position = {word(i): i for i in range(n)}
    chunks, _ = tiny_bundle.chunk([" ".join(position)])
    assert len(chunks) == most
    numbers = [[position[token] for token in chunk.split()] for chunk in chunks]
    assert all(len(c) == words and c == list(range(c[0], c[0] + words)) for c in numbers), (
        "contiguous windows"
    )
    assert numbers[0][0] == 0 and numbers[-1][-1] >= n - 2 * words, "from the start to the end of the page"


def test_version_is_a_content_hash_and_training_is_deterministic(tiny_bundle, tmp_path):
    again = load_bundle(make_tiny_bundle(tmp_path / "again"))
    assert again.version == tiny_bundle.version
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest_version(manifest) == manifest["version"] == again.version
    assert manifest["normalization_version"] and manifest["hyperparameters"]["seed"] == 0
    assert all(m["training_data"]["sha256"] for m in manifest["models"].values())


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(BundleError, match=str(tmp_path / "nope")):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest missing"):
        load_bundle(tmp_path / "empty")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "model file missing"),
        (lambda p: p.write_bytes(b""), "truncated or empty"),
        (lambda p: p.write_bytes(b"this is not a fastText model at all"), "bad magic"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "corrupt"),
    ],
    ids=["missing", "empty", "garbage", "truncated"],
)
def test_bad_model_files_name_the_path(tiny_bundle_path, tmp_path, damage, message):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    victim = copy / "respect.bin"
    damage(victim)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(copy)
    assert str(victim) in str(info.value)


def test_hand_edited_manifest_and_other_normalisation_are_refused(tiny_bundle_path, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"]["care"]["threshold"] += 0.123
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="content hash"):
        load_bundle(copy)
    manifest["normalization_version"] = "0"
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="normalisation"):
        load_bundle(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(copy)
    # without its sha256 a truncated model would reach fastText's C++ loader; the manifest must pin it
    manifest["normalization_version"] = json.loads((tiny_bundle_path / "manifest.json").read_text())[
        "normalization_version"
    ]
    del manifest["models"]["care"]["sha256"]
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"models.care needs 'file' and 'sha256'"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        ({"chunk_words": 0}, "scoring.chunk_words must be an integer >= 1"),
        ({"max_chunks": 0}, "scoring.max_chunks must be an integer >= 1"),
        ({"aggregation": {"method": "median"}}, "scoring.aggregation.method must be one of"),
        (
            {"aggregation": {"method": "mean_min", "weight": 5}},
            "scoring.aggregation.weight must be in [0, 1]",
        ),
    ],
)
def test_scoring_settings_are_checked_at_load(tiny_bundle_path, tmp_path, scoring, message):
    """Caught when the bundle loads, not in a worker at the first long page (or as silently clipped scores)."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["scoring"] = {**manifest.get("scoring", {}), **scoring}
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(f"{copy / 'manifest.json'}: {message}")):
        load_bundle(copy)


@pytest.mark.parametrize("scoring", [None, {"aggregation": None}])
def test_null_scoring_settings_mean_the_defaults(tiny_bundle_path, tmp_path, scoring):
    """read_manifest accepts null as "not given"; loading must then agree instead of crashing on None."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["scoring"] = scoring
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(copy)
    assert bundle.aggregation == {"method": "mean"} and bundle.chunk_words == 150
    assert len(bundle.score(["a kind word " * 400])["care"]) == 1


def test_a_model_with_other_labels_is_refused(tiny_bundle_path, tmp_path):
    """A model with the right checksum but other labels (say, language ID) would score silently wrong."""
    from classifiers.bundle import sha256_file
    from classifiers.train import fit_in_fresh_process

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    (tmp_path / "lang.txt").write_text("__label__en hello there\n__label__fr bonjour mes amis\n" * 20)
    manifest = json.loads((copy / "manifest.json").read_text())
    target = copy / manifest["models"]["care"]["file"]
    # in a fresh process, as the trainer does: fastText 0.9.2 reads uninitialised memory ("Encountered NaN")
    fit_in_fresh_process("supervised", tmp_path / "lang.txt", {"epoch": 1, "dim": 8, "thread": 1}, target)
    manifest["models"]["care"]["sha256"] = sha256_file(target)
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=re.escape(f"{target}: labels ['__label__en', '__label__fr'] are not")
    ):
        load_bundle(copy)


def test_shipped_default_bundle_loads_and_ranks():
    path = default_bundle_path()
    assert (path / "manifest.json").is_file(), f"the shipped default bundle is missing at {path}"
    bundle = load_bundle("default")
    assert {"care", "respect", "constructiveness", "virtue"} <= set(bundle.dimensions)
    sizes = sum(f.stat().st_size for f in path.iterdir())
    assert sizes < 12e6, "the shipped bundle should stay a few MB"
    scores = bundle.score([KIND, HOSTILE])
    assert scores["respect"][0] > scores["respect"][1]
    assert scores["care"][0] > scores["care"][1]


def test_length_scaled_calibration_is_fitted_and_applied():
    """fastText's logit is a mean over n-grams; when longer texts deserve more confident scores, the fit finds it."""
    from classifiers.bundle import DimensionModel
    from classifiers.train import fit_calibration

    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 20_000)
    length = np.log1p(rng.integers(1, 150, 20_000))
    targets = (rng.random(20_000) < 1 / (1 + np.exp(-0.6 * z * length))).astype(float)
    raw = 1 / (1 + np.exp(-z))
    scaled = fit_calibration(raw, targets, length, scale_by_length=True)
    platt = fit_calibration(raw, targets)
    assert scaled["a"] == 0.0 and scaled["c"] == 0.0 and abs(scaled["d"] - 0.6) < 0.05, scaled
    assert platt["d"] == 0.0 and platt["a"] > 0

    def log_loss(cal):
        p = 1 / (1 + np.exp(-(cal["a"] * z + cal["d"] * z * length + cal["c"] * length + cal["b"])))
        return -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))

    assert log_loss(scaled) < log_loss(platt) - 0.005  # 0.314 vs 0.324
    with pytest.raises(ValueError, match="need lengths"):
        fit_calibration(raw, targets, scale_by_length=True)

    model = DimensionModel("care", None, {**scaled, "max_len": 150})
    short, long = ["kind words"], [" ".join(["kind words"] * 40)]
    grid = np.linspace(0.05, 0.95, 19)
    for lines in (short, long):  # rises with fastText's P at every length
        assert np.all(np.diff([model.calibrate(np.array([p]), lines)[0] for p in grid]) > 0)
    sure = np.array([0.9])
    assert model.calibrate(sure, long)[0] > model.calibrate(sure, short)[0] > 0.5


def test_a_format_1_bundle_still_loads(tiny_bundle_path, tmp_path):
    """Bundles built before the length-scaled calibration have no `d`; they score as they did (Platt)."""
    manifest = json.loads((tiny_bundle_path / "manifest.json").read_text())
    assert manifest["format"] == 2
    for dim, entry in manifest["models"].items():  # what training fits now: the logit scaled by length
        assert entry["calibration"]["a"] == 0.0 and entry["calibration"]["d"] > 0, dim
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_path, copy)
    manifest["format"] = 1
    for entry in manifest["models"].values():
        entry["calibration"] = {"method": "logistic(logit p, log1p tokens)", "a": 2.0, "b": -0.5, "c": 0.0}
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    old = load_bundle(copy)
    texts = [KIND, HOSTILE, "the weather report for tomorrow"]
    chunks, _ = old.chunk(texts)
    for dim, model in old.models.items():
        raw = np.clip(model.predict_raw(chunks), 1e-5, 1 - 1e-5)
        expected = 1 / (1 + np.exp(-(2.0 * np.log(raw / (1 - raw)) - 0.5)))
        assert model.calibration["d"] == 0.0
        np.testing.assert_allclose(old.score(texts)[dim], expected, rtol=1e-5, err_msg=dim)
    manifest["format"] = 3
    manifest["version"] = manifest_version(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"bundle format 3 \(this code reads 1, 2\)"):
        load_bundle(copy)


def test_length_terms_need_the_scored_lines(tiny_bundle):
    """Without the lines, a length-scaled calibration (a = 0) would give every text the same score."""
    model = tiny_bundle.models["care"]
    with pytest.raises(ValueError, match="care: this calibration has length terms"):
        model.calibrate(np.array([0.2, 0.9]))
    unsure = np.array([0.52])  # the tiny model's calibration is steep; stay off the saturated ends
    short = model.calibrate(unsure, ["kind words"])[0]
    capped = model.calibrate(unsure, [" ".join(["kind"] * 40)])[0]
    assert 0.5 < short < capped < 0.9999  # longer text, same fastText P: surer
    beyond = model.calibrate(unsure, [" ".join(["kind"] * 400)])[0]
    assert beyond == pytest.approx(capped)  # L is capped at max_len (40 tokens here)
