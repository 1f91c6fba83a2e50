"""Session fixtures of the stats tests: real `corpus run`s (run_graph on the session Dask cluster).

`corpus_out` publishes two versions into one output root from self-made JSONL inputs (v2 adds a third input
file), so every test reads real stage outputs, real datatrove logs and a real manifest. Synthetic dialogues
are off here (they need a vLLM engine; tests/stats/test_stats_synth.py covers them).
"""

from __future__ import annotations

import pytest
from stats_helpers import run_corpus, write_inputs


@pytest.fixture(scope="session")
def corpus_out(tmp_path_factory, dask_client, tiny_bundle_path) -> dict:
    """OUT with versions v1 (two input files) and v2 (three), plus each run's summary."""
    root = tmp_path_factory.mktemp("stats-run")
    inputs = root / "inputs"
    files = write_inputs(inputs, files=3, per_file=14)
    (inputs / "LICENSE").write_text(
        "MIT License\n\nCopyright (c) 2026 Test Authors\n\nPermission is hereby "
        "granted, free of charge, to any person obtaining a copy...\n"
    )
    out = root / "out"
    first = run_corpus(dask_client, out, [str(f) for f in files[:2]], tiny_bundle_path)
    second = run_corpus(dask_client, out, [str(f) for f in files], tiny_bundle_path)
    return {"out": out, "inputs": inputs, "runs": [first, second]}


@pytest.fixture()
def offline_hf(tmp_path, monkeypatch):
    """`datasets` without network, with its cache in the test's folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    return tmp_path / "hf"
