"""Synthetic dialogue stats from a real run with the CPU vLLM engine (tiny random model): attempts,
acceptances and rejections by reason reconcile with the stage's own summary and the midtrain Parquet."""

from __future__ import annotations

import pytest
from stats_helpers import reconcile, run_corpus, stage_results, write_inputs

import pipelines.stats as stats


@pytest.mark.vllm
@pytest.mark.slow
def test_synthetic_attempts_acceptances_and_rejections(dask_client, tiny_bundle_path, tmp_path, offline_hf):
    files = write_inputs(tmp_path / "inputs", files=1, per_file=12)
    out = tmp_path / "out"
    summary = run_corpus(
        dask_client,
        out,
        [str(f) for f in files],
        tiny_bundle_path,
        "synthetic.target=4",
        "synthetic.chunk_size=4",
        "synthetic.min_score=0",
        # the tiny random model writes gibberish, and short: without these checks some dialogues are accepted, so the
        # accepted path (card, midtrain Parquet) is checked, not only the rejected one
        "synthetic.min_language_score=0",
        "synthetic.min_chars=1",
        "synthetic.character_checks=false",
        "synthetic.min_turns=2",
    )
    synth = stage_results(out, summary)["synthesize"]
    assert not synth.get("chunks_failed"), synth.get("chunks_failed")
    problems, checked = reconcile(out, summary)
    assert not problems, "\n".join(problems)
    assert checked > 0
    tables = stats.load(out)
    table = tables["synthetic"]
    totals = table.groupby("outcome")["dialogues"].sum()
    assert totals["attempted"] == synth["attempted"] == 4
    assert totals.get("accepted", 0) == synth["accepted"]
    assert totals.get("accepted", 0) + totals.get("rejected", 0) == totals["attempted"]
    checks = table[table["outcome"] == "failed_check"].set_index("reason")["dialogues"].to_dict()
    assert checks == {k: v for k, v in synth["rejected_by_reason"].items()}
    stage = tables["stages"].set_index("stage").loc["synthesize"]
    assert stage["documents_in"] == 4 and stage["rows"] == synth["accepted"] and stage["unaccounted"] == 0
    card = (out / "latest" / "README.md").read_text()
    assert "## Synthetic dialogues" in card and "4 attempted" in card
    assert synth["accepted"] > 0, synth
    from datasets import load_dataset

    assert "config_name: midtrain" in card
    dialogues = load_dataset(
        str((out / "latest").resolve()), "midtrain", split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert dialogues.num_rows == synth["accepted"]
    assert {"role", "content"} <= set(dialogues[0]["messages"][0])
