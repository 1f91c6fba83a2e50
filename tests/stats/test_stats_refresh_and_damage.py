"""Stats of a refresh (curate and dedup count only its new inputs), the card's licence counts, and damaged
output roots (a stats table deleted, `latest` pointing at a deleted version).

`refreshed` runs a real `corpus refresh` (run_graph, mode "refresh") on a copy of the session's two-version
output root with one new input file, so v3 is a refresh version as the nightly job publishes it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stats_helpers import write_inputs

import pipelines.stats as stats
from pipelines.cli import main as corpus
from pipelines.config import CorpusConfig, load_config


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = corpus(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def refreshed(corpus_out, dask_client, tiny_bundle_path, tmp_path_factory) -> dict:
    """A copy of `corpus_out` (v1, v2 by `corpus run`) plus v3 published by a refresh with one new input."""
    from pipelines.graph import run_graph

    root = tmp_path_factory.mktemp("stats-refresh")
    out = root / "out"
    shutil.copytree(corpus_out["out"], out, symlinks=True)
    old_inputs = sorted(str(p) for p in corpus_out["inputs"].glob("*.jsonl"))
    new = write_inputs(root / "new", files=1, per_file=5, seed=7, planted=False)
    config = load_config(
        None,
        [
            f"out={out}",
            f"input={','.join([*old_inputs, *map(str, new)])}",
            f"classifier.bundle={tiny_bundle_path}",
            "cluster.kind=address",
            f"cluster.address={dask_client.scheduler.address}",
            "synthetic.target=0",
        ],
    )
    summary = run_graph(config, mode="refresh")
    assert summary["status"] == "published" and summary["version"] == "v3", summary
    return {"out": out, "summary": summary}


def test_refresh_stats_label_new_inputs_and_drift_skips_curate_and_dedup(refreshed, capsys):
    out = refreshed["out"]
    v2, v3 = stats.load(out, version="v2"), stats.load(out, version="v3")
    assert v3["version"]["mode"].iloc[0] == "refresh" and v2["version"]["mode"].iloc[0] == "full"
    curate_new = int(v3["stages"].set_index("stage").loc["curate", "rows"])
    mix_in = int(v3["stages"].set_index(["stage", "dataset"]).loc[("mix", "pretrain"), "documents_in"])
    assert curate_new < mix_in  # the situation that misled: curate saw 5 new inputs, the mix every document

    drift = stats.compare(v2, v3)
    assert not drift["counts"]["stage"].isin(["curate", "dedup"]).any()
    assert not drift["scores"]["stage"].isin(["curate", "dedup"]).any()
    assert "mix" in set(drift["counts"]["stage"])
    assert "v3 is a refresh" in drift["notes"]["note"].iloc[0]
    full = stats.compare(out / "versions" / "v1", out / "versions" / "v2")  # two full runs: compared
    assert {"curate", "dedup"} <= set(full["counts"]["stage"]) and not len(full["notes"])

    code, text, _ = _run(capsys, "stats", str(out), "--compare", "v2")
    assert code == 0
    assert "curate/scored: rows" not in text and "dedup/deduped: rows" not in text
    assert "curate and dedup not compared: v3 is a refresh" in text
    assert "mix/pretrain: rows" in text
    table = text.split("\n\n")[1]
    assert "curate*" in table and "dedup*" in table
    assert (
        "* curate and dedup count this run's new inputs only: this version was published by `corpus refresh`"
        in text
    )
    code, text, _ = _run(capsys, "stats", str(out), "--version", "v2")
    assert code == 0 and "curate*" not in text and "new inputs" not in text  # a full run is not labelled


def test_refresh_card_labels_curate_and_dedup_as_new_inputs(refreshed):
    out = refreshed["out"]
    card = (out / "versions" / "v3" / "README.md").read_text()
    assert "| curate (this run's new inputs) | scored |" in card
    assert "| dedup (this run's new inputs) | deduped |" in card
    assert (
        "Curate and dedup count this run's new inputs only: this version was published by `corpus refresh`"
        in card
    )
    changes = card.split("## Changes since `v2`")[1].split("\n## ")[0]
    assert "curate and dedup not compared: v3 is a refresh" in changes
    assert "| curate |" not in changes and "| mix | pretrain |" in changes
    full = (out / "versions" / "v2" / "README.md").read_text()
    assert "| curate | scored |" in full and "new inputs" not in full


def test_refresh_report_labels_curate_and_dedup_as_new_inputs(refreshed, tmp_path):
    from pipelines.stats.report import write_report

    page = write_report(refreshed["out"], output=tmp_path / "v3.html").read_text()
    stages = page.split("<h2>Stages</h2>")[1].split("<h2>")[0]
    assert "<td>curate*</td>" in stages and "<td>dedup*</td>" in stages and "<td>mix</td>" in stages
    assert "* curate and dedup count this run&#x27;s new inputs only" in stages
    full = write_report(refreshed["out"] / "versions" / "v2", output=tmp_path / "v2.html").read_text()
    assert "curate*" not in full and "new inputs" not in full.split("<h2>Stages</h2>")[1].split("<h2>")[0]


def test_card_licence_counts_are_distinct_ids_over_every_profile_folder(refreshed):
    """Per-source documents sum to the distinct ids of the union of pretrain* folders (here a second,
    hand-made profile folder holds a document `pretrain/` lacks and one it has)."""
    from pipelines.stats.card import render_card, source_licenses

    out = refreshed["out"]
    version = out / "versions" / "v3"
    table = pq.read_table(version / "pretrain", columns=["id", "source", "repeat_index"])
    first = table.filter(pa.compute.equal(table["repeat_index"], 0))
    ids = first.column("id").to_pylist()
    manifest = json.loads((version / "manifest.json").read_text())
    config = CorpusConfig.model_validate(manifest["config"])
    frame = source_licenses(version, list(config.input))
    assert frame["documents"].sum() == len(set(ids))
    # a second profile folder: one document shared with pretrain/, one only there
    copy = refreshed["out"].parent / "licence-copy" / "v3"
    shutil.copytree(version, copy)
    (copy / "pretrain_civic").mkdir()
    source = first.column("source")[0].as_py()
    extra = pa.table(
        {
            "id": [ids[0], "only-in-civic"],
            "source": [source, source],
            "repeat_index": pa.array([0, 0], pa.int16()),
        }
    )
    pq.write_table(extra, copy / "pretrain_civic" / "part-00000.parquet")
    frame = source_licenses(copy, list(config.input))
    assert frame["documents"].sum() == len(set(ids)) + 1  # the old per-folder maximum said len(set(ids))
    card = render_card(copy, config, version_id="v3")
    assert "| source | license | files | documents (distinct, all pretrain*) |" in card


def test_stats_names_a_missing_stages_table(corpus_out, capsys, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(corpus_out["out"], out, symlinks=True)
    missing = out / "versions" / "v2" / "stats" / "stages.parquet"
    missing.unlink()
    code, text, err = _run(capsys, "stats", str(out))
    assert code == 2 and text == ""
    assert len(err.strip().splitlines()) == 1
    assert str(missing) in err and "missing" in err and "have: " in err
    code, _, err = _run(capsys, "stats", str(out), "--table", "shards", "--csv")
    assert code == 0  # the tables that are there still print
    code, _, err = _run(capsys, "stats", str(out), "--version", "v1", "--compare", "v2")
    assert code == 2 and str(missing) in err
    code, _, err = _run(capsys, "report", str(out))
    assert code == 2 and str(missing) in err


def test_stats_and_verify_name_a_dangling_latest(corpus_out, capsys, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(corpus_out["out"], out, symlinks=True)
    assert os.readlink(out / "latest") == "versions/v2"
    shutil.rmtree(out / "versions" / "v2")
    code, text, err = _run(capsys, "stats", str(out))
    assert code == 2 and text == ""
    assert str(out / "latest") in err and "versions/v2" in err and "does not exist" in err
    code, text, _ = _run(capsys, "stats", str(out), "--version", "v1")
    assert code == 0 and text.startswith("prosocial-corpus v1")  # naming a version still works
    code, text, err = _run(capsys, "verify", str(out), "--all", "--quick")
    assert code == 1
    assert f"ok {out / 'versions' / 'v1'}" in text  # every version is still checked
    assert "latest" in err and "versions/v2" in err and "does not exist" in err
    code, _, err = _run(capsys, "verify", str(out), "--quick")
    assert code == 1 and "versions/v2" in err and "does not exist" in err


def test_resolve_version_follows_a_live_latest(corpus_out):
    assert Path(stats.load(corpus_out["out"])["version"]["path"].iloc[0]).name == "v2"
