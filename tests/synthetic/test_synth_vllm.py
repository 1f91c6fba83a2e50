"""Real CPU vLLM in this process, one engine for the whole module (~20 s start, ~3 GB): batched guided
generation, validation of noise on the tiny random model, and annotation end to end.

The engine is closed when the module ends, so it is never alive at the same time as the engines of the
`corpus synth` subprocess tests (test_synth_cli.py).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthetic.settings import SyntheticSettings

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(tiny_model):
    from synthetic.engine import EngineSpec, close_engine, get_engine

    spec = EngineSpec.from_settings(SyntheticSettings())  # the same key annotate/run_chunk ask for
    started = get_engine(spec)
    sockets = started._rpc_dir
    assert sockets and os.listdir(sockets), "vLLM's ipc sockets live in the engine's own folder"
    yield started
    close_engine()
    assert not os.path.exists(sockets), "closing the engine removes its socket files (vLLM never does)"


def test_one_batch_of_guided_dialogues_all_parse(engine):
    from synthetic.engine import EngineSpec, get_engine, loaded_engine_key
    from synthetic.generate import make_requests
    from synthetic.scenarios import ScenarioSampler, load_grid
    from synthetic.validate import parse_dialogue

    settings = SyntheticSettings()
    assert get_engine(EngineSpec.from_settings(settings)) is engine  # reused, not reloaded
    assert loaded_engine_key() == EngineSpec.from_settings(settings).key()
    grid = load_grid(settings.grid)
    scenarios = ScenarioSampler(grid, seed=0).sample_range(0, 24)
    requests = make_requests(settings, grid, scenarios)
    assert len({r.id for r in requests}) == 24 and len({r.seed for r in requests}) == 24
    completions = engine.generate(requests)
    assert [c.request_id for c in completions] == [r.id for r in requests]
    parsed = [parse_dialogue(c.text, c.finish_reason, c.error) for c in completions]
    assert [p.reason for p in parsed] == [None] * 24, "guided decoding must make every completion parse"
    assert all(c.finish_reason == "stop" and c.output_tokens > 0 for c in completions)
    # seeded per request: the same request gives the same text
    again = engine.generate(requests[:3])
    assert [c.text for c in again] == [c.text for c in completions[:3]]


def test_noise_is_rejected_with_recorded_reasons(engine, tiny_bundle_path, tmp_path):
    from synthetic.generate import run_chunk
    from synthetic.scenarios import Grounding, ScenarioSampler, load_grid

    settings = SyntheticSettings(target=16, chunk_size=16, min_score=0.9)
    grid = load_grid(settings.grid)
    sampler = ScenarioSampler(
        grid,
        seed=0,
        groundings=[Grounding("g1", "Neighbours planted trees together.")],
        grounding_fraction=0.5,
    )
    result = run_chunk(settings, grid, sampler, 0, tmp_path / "cache.jsonl", tiny_bundle_path)
    assert (
        result.counts["attempted"] == 16
        and result.counts["parsed"] == 16
        and result.counts["generated"] == 16
    )
    assert result.dimensions == ["care", "constructiveness", "respect", "virtue"] or set(
        result.dimensions
    ) == {"care", "constructiveness", "respect", "virtue"}
    rejected = [r for r in result.rows if not r["validation"]["passed"]]
    assert len(rejected) >= 12, "random weights should not pass validation"
    assert all(r["validation"]["reasons"] for r in rejected)
    assert all(0.0 <= r["ps_care"] <= 1.0 for r in result.rows)
    assert any(r["grounding_doc_id"] == "g1" for r in result.rows)
    # a retried task finds every completion in the request cache and generates nothing
    again = run_chunk(settings, grid, sampler, 0, tmp_path / "cache.jsonl", tiny_bundle_path)
    assert again.counts["generated"] == 0 and again.counts["cached"] == 16
    assert [r["raw"] for r in again.rows] == [r["raw"] for r in result.rows]


def test_annotation_end_to_end(engine, tmp_path):
    import argparse

    from synthetic.annotate import add_arguments, main

    docs = tmp_path / "scored"
    docs.mkdir()
    texts = [
        "We are not sure yet; the evidence is mixed, and we may be wrong about the cause.",
        "Volunteers cleaned the river bank and planted native trees for the next generation.",
        "Buy now! Limited offer! Click here!",
        "The council heard residents on both sides and proposed a compromise.",
        "I think you should decide for yourself; here are the options and their trade-offs.",
        "Weather today: sunny, 21 degrees.",
    ]
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(6)], "text": texts, "prosocial": [0.5] * 6}),
        docs / "part-0.parquet",
    )

    def run(out, *extra):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            [
                "--input",
                str(docs),
                "--out",
                str(out),
                "--dimensions",
                "epistemic_humility,care",
                "-n",
                "5",
                "--model",
                "builtin:tiny-random-llama",
                *extra,
            ]
        )
        assert main(args) == 0
        return json.loads((out / "annotation.json").read_text()), pq.read_table(
            out / "labels.parquet"
        ).to_pylist()

    counts, rows = run(tmp_path / "labels")
    assert counts["documents"] == 5 and counts["requests"] == 10
    assert counts["parsed"] + counts["unparseable"] == 10 and counts["parsed"] == 10  # guided JSON parses
    assert len(rows) == 5 and all(0 <= r["care"] <= 5 and 0 <= r["epistemic_humility"] <= 5 for r in rows)

    # answers cut off by max_tokens cannot be parsed: counted by reason, and kept out of the labels
    counts, rows = run(tmp_path / "cut", "--max-tokens", "4")
    assert counts["unparseable"] == 10 and counts["parsed"] == 0
    assert counts["unparseable_by_dimension"]["care"] == {"truncated": 5}
    assert rows == []

    from classifiers.recipes import load_recipe

    assert load_recipe(tmp_path / "labels" / "recipe.yaml").dimensions == ["care", "epistemic_humility"]
