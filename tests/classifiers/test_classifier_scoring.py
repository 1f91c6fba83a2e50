"""The datatrove scoring step and the `corpus score` command."""

from __future__ import annotations

import json
import pickle

import pytest
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from classifiers.profiles import ProfileError, load_profile
from classifiers.scoring import ProsocialScorer
from pipelines.cli import main as corpus

KIND = "Thank you so much, I hope you feel better soon. Happy to help, you are welcome."
HOSTILE = "You are a stupid worthless idiot and I hate you, shut up, loser."


def test_step_annotates_without_dropping(tiny_bundle_path, tiny_bundle):
    step = ProsocialScorer(bundle=tiny_bundle_path, batch_size=2)
    clone = pickle.loads(pickle.dumps(step))  # executors ship steps to workers: no model inside
    assert len(pickle.dumps(step)) < 50_000
    docs = [
        Document(text=t, id=str(i))
        for i, t in enumerate([KIND, HOSTILE, "", KIND + " " + HOSTILE, "the news"])
    ]
    out = list(clone.run(iter(docs)))
    assert [d.id for d in out] == ["0", "1", "2", "3", "4"]
    for doc in out:
        for dim in tiny_bundle.dimensions:
            assert 0.0 <= doc.metadata[f"ps_{dim}"] <= 1.0
        assert doc.metadata["classifier_version"] == tiny_bundle.version
    assert out[0].metadata["prosocial"] > 0.8 > 0.2 > out[1].metadata["prosocial"]
    assert clone.stats["scored"].total == 5


def test_step_in_a_streaming_pipeline(tiny_bundle_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    with open(src / "docs.jsonl", "w") as handle:
        for i in range(50):
            handle.write(json.dumps({"id": f"d{i}", "text": KIND if i % 2 else HOSTILE}) + "\n")
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(src)),
            ProsocialScorer(bundle=tiny_bundle_path, batch_size=16),
            JsonlWriter(str(tmp_path / "out"), compression=None),
        ],
        logging_dir=str(tmp_path / "logs"),
        tasks=1,
    ).run()
    rows = [
        json.loads(line)
        for f in sorted((tmp_path / "out").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(rows) == 50
    kind = [r["metadata"]["prosocial"] for r in rows if r["id"] in {f"d{i}" for i in range(1, 50, 2)}]
    hostile = [r["metadata"]["prosocial"] for r in rows if r["id"] in {f"d{i}" for i in range(0, 50, 2)}]
    assert min(kind) > max(hostile)


def test_profile_weighting_a_missing_dimension_fails_at_construction(tiny_bundle_path, tmp_path):
    profile = tmp_path / "eco.yaml"
    profile.write_text("weights: {ecological_care: 1.0}\ntiers: [{name: all, min_score: 0.0, factor: 1.0}]\n")
    with pytest.raises(ProfileError, match="ecological_care"):
        ProsocialScorer(bundle=tiny_bundle_path, profile=str(profile))


def test_profile_bound_error_says_the_whole_range(tmp_path):
    """Profiles share the run config's error wording: both ends of a bounded value, not only the broken one."""
    profile = tmp_path / "steep.yaml"
    profile.write_text("weights: {care: 1.0}\ntiers: [{name: all, min_score: 1.5, factor: 1.0}]\n")
    with pytest.raises(
        ProfileError, match=r"key 'tiers\.0\.min_score': expected a value from 0 to 1, got 1\.5"
    ):
        load_profile(str(profile))


def test_corpus_score_keeps_input_order(tiny_bundle_path, tiny_bundle, tmp_path, capsys):
    texts = [KIND, HOSTILE] * 3 + [""]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"x{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "sub" / "out.jsonl"
    assert corpus(["score", "--model", str(tiny_bundle_path), "--input", str(inp), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"x{i}" for i in range(len(texts))]
    assert set(rows[0]) == {"id", "prosocial", *tiny_bundle.dimensions}
    direct = tiny_bundle.score(texts)
    for i, row in enumerate(rows[:-1]):
        assert row["care"] == pytest.approx(float(direct["care"][i]), abs=1e-5)
    assert rows[0]["prosocial"] > rows[1]["prosocial"]
    # an empty text has nothing to judge: null scores and the reason, not the model's constant for ""
    assert rows[-1]["prosocial"] is None and rows[-1]["care"] is None and "no words" in rows[-1]["error"]


def test_corpus_score_errors_are_clear(tiny_bundle_path, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b'{"id": 1, "text": "hello"}\nnot json\n{"id": 3}\n{"id": 4, "text": "caf\xe9"}\n\n'
        b'{"id": "5\\ud800", "text": "kind \\udc80 words"}\n{"id": 6, "text": "thanks"}\n'
        b'{"id": NaN, "text": "thanks"}\n{"id": 1e999, "text": "thanks"}\n'
    )
    out = tmp_path / "out.jsonl"
    assert corpus(["score", "--model", str(tiny_bundle_path), "--input", str(inp), "--output", str(out)]) == 0
    strict = {"parse_constant": lambda name: pytest.fail(f"{name} in the output is not JSON")}
    rows = [json.loads(line, **strict) for line in out.read_text(encoding="utf-8").splitlines()]
    # output line N answers input line N: bad lines get null scores and the reason
    assert [r["id"] for r in rows] == [1, None, 3, None, None, "5\ufffd", 6, None, None]
    assert [i for i, r in enumerate(rows, 1) if r.get("error")] == [2, 3, 4, 5, 8, 9]
    assert "NaN is not a JSON value" in rows[7]["error"] and "1e999 is out of range" in rows[8]["error"]
    assert all(r["prosocial"] is None and r["care"] is None for r in rows if r.get("error"))
    assert "line 4: 'utf-8' codec can't decode" in rows[3]["error"] and "blank line" in rows[4]["error"]
    assert 0 <= rows[5]["prosocial"] <= 1 and 0 <= rows[6]["prosocial"] <= 1  # surrogate text repaired
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3" in err and "repaired invalid UTF-8 (lone surrogates) in 1" in err
    assert (
        corpus(
            ["score", "--model", str(tiny_bundle_path), "--input", str(inp), "--output", str(out), "--strict"]
        )
        == 2
    )
    assert "line 2" in capsys.readouterr().err
    assert (
        corpus(["score", "--model", str(tmp_path / "missing"), "--input", str(inp), "--output", str(out)])
        == 2
    )
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert (
        corpus(["score", "--model", str(tiny_bundle_path), "--input", str(tmp_path), "--output", str(out)])
        == 2
    )
    assert f"--input {tmp_path}: is a folder (expected one JSONL file)" in capsys.readouterr().err


def test_corpus_score_output_mode_nested_ids_and_no_partial_file(tiny_bundle_path, tmp_path):
    """The output gets the umask's mode (not mkstemp's 0600); a list id with a lone surrogate is repaired; a
    write that fails (here: a file-size limit) exits 1 naming the output and leaves no temp file behind."""
    import os
    import resource
    import stat
    import subprocess
    import sys
    from pathlib import Path

    corpus_bin = str(Path(sys.executable).with_name("corpus"))
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": ["a\\ud800"], "text": "thank you"}\n' + "".join(
        json.dumps({"id": i, "text": KIND}) + "\n" for i in range(60)
    ))  # fmt: skip
    out = tmp_path / "out" / "scores.jsonl"
    args = [corpus_bin, "score", "--model", str(tiny_bundle_path), "--input", str(inp), "--output", str(out)]
    ok = subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert json.loads(out.read_text().splitlines()[0])["id"] == ["a\ufffd"]
    out.unlink()

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    failed = subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert failed.returncode == 1 and str(out) in failed.stderr and "Traceback" not in failed.stderr
    assert os.listdir(out.parent) == []


def test_step_refuses_a_bundle_rebuilt_since_the_run_started(tiny_bundle_path):
    from classifiers.bundle import BundleError

    step = ProsocialScorer(bundle=tiny_bundle_path)
    assert step.bundle_path.startswith("/")
    step.version = "0" * 16  # what the driver checked when the run started
    with pytest.raises(BundleError, match="rebuilt during the run"):
        list(step.run([Document(text=KIND, id="a")]))
