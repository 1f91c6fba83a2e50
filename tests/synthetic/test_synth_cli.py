"""`corpus synth` as users run it: a real subprocess, a 2-worker LocalCluster, CPU vLLM in each worker.

One flow (engines start once per run, ~1 min each):
1. start `corpus synth`, SIGKILL its whole process group as soon as the first chunk is written;
2. rerun the same command to the end: chunks already written are skipped untouched, the request cache means
   no completion is generated twice, every attempt parses, noise is rejected with recorded reasons;
3. the dialogues written have the exact schema, load with `datasets` and go through `apply_chat_template`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CORPUS = str(Path(sys.executable).with_name("corpus"))
TARGET = 32
CHUNK = 4


def _kill_run(pid: int) -> None:
    """Kill a run the way a terminal or a scheduler does: SIGKILL to the command's process group.

    Dask puts its worker processes in their own process groups, and vLLM's engine processes belong to the
    workers, so the group kill alone does not reach them: they must go down by themselves (workers exit when
    their nanny dies; the engine watchdog kills the engine processes of a dead worker). Every descendant is
    collected before the kill, the test fails if any is still alive 60 s later, and stragglers are killed by
    pid so the machine is left clean either way.
    """
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    began = time.perf_counter()
    _gone, alive = psutil.wait_procs(tree, timeout=60)
    print(f"killed run: {len(tree)} processes gone in {time.perf_counter() - began:.1f} s")
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    assert not alive, (
        f"processes outlived the killed run: {[(p.pid, p.name()) for p in alive if p.is_running()]}"
    )


def test_corpus_synth_kill_resume_schema_and_chat_template(tmp_path, tiny_model, tiny_bundle_path):
    out = tmp_path / "out"
    args = [
        CORPUS,
        "synth",
        f"out={out}",
        "synthetic.model=builtin:tiny-random-llama",
        f"synthetic.target={TARGET}",
        "synthetic.min_score=0",
        f"synthetic.chunk_size={CHUNK}",
        "synthetic.min_language_score=0",
        "synthetic.min_chars=1",
        "synthetic.character_checks=false",
        f"classifier.bundle={tiny_bundle_path}",
        "cluster.n_workers=2",
        f"cluster.local_directory={tmp_path / 'dask'}",
    ]
    env = dict(os.environ)
    log = open(tmp_path / "first.log", "wb")  # noqa: SIM115 - closed in the finally below
    started = time.time()
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 420
    written: list[Path] = []
    try:
        while time.time() < deadline and proc.poll() is None:
            written = sorted(out.glob("work/synth-*/synthesize/v-*/chunks/chunk-*.parquet"))
            if written:
                break
            time.sleep(0.1)
    finally:
        _kill_run(proc.pid)
        proc.wait(timeout=30)
        log.close()
    print(f"first chunk written after {time.time() - started:.0f} s")
    assert written, (
        f"no chunk written before the deadline; log: {(tmp_path / 'first.log').read_text()[-3000:]}"
    )
    stage = written[0].parents[1]
    before = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (stage / "chunks").glob("chunk-*.parquet")
    }
    assert 0 < len(before) < TARGET // CHUNK, "the kill should land mid-run"
    cached_before = {
        p.name: len(p.read_text().splitlines())
        for p in (stage.parent / "cache").glob("chunk-*.jsonl")
        if p.name.replace(".jsonl", ".parquet") not in before
    }

    started = time.time()
    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"resumed run took {time.time() - started:.0f} s")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((stage / "summary.json").read_text())

    # resume: written chunks skipped and untouched; nothing already generated is generated again
    after = {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (stage / "chunks").glob("chunk-*.parquet")
    }
    assert {name: after[name] for name in before} == before
    assert summary["chunks_skipped"] == len(before)
    assert summary["chunks_run"] == TARGET // CHUNK - len(before)
    assert summary["generated_requests"] == TARGET - CHUNK * len(before) - sum(cached_before.values())
    ids = [
        json.loads(line)["request_id"]
        for p in (stage.parent / "cache").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(ids) == len(set(ids)) == TARGET, "a completion was generated twice"

    # every attempt made and parsed; noise rejected with recorded reasons
    assert (
        summary["attempted"] == TARGET
        and summary["parsed"] == TARGET
        and summary["parseable_fraction"] == 1.0
    )
    assert summary["accepted"] + summary["rejected"] == TARGET
    assert summary["rejected"] > 0 and summary["rejected_by_reason"]
    attempts = pq.read_table(stage / "chunks")
    for row in attempts.to_pylist():
        assert row["validation"]["passed"] == (not row["validation"]["reasons"])

    # the written dialogues: exact schema, `datasets`, chat template
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from synthetic.schema import dialogue_schema

    midtrain = Path(summary["midtrain_dir"])  # the generation folder `OUT/synth/midtrain` now points at
    assert midtrain.is_relative_to(out) and (out / "synth" / "midtrain").resolve() == midtrain.resolve()
    files = sorted(midtrain.glob("*.parquet"))
    assert summary["accepted"] > 0, "with thresholds at 0 some noise dialogues should be written"
    assert sum(pq.read_metadata(f).num_rows for f in files) == summary["accepted"]
    expected = dialogue_schema(["care", "constructiveness", "respect", "virtue"])
    for file in files:
        schema = pq.read_schema(file)
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in expected]
    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert len(dataset) == summary["accepted"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for row in dataset:
        assert row["validation"]["passed"] and row["model"] == "builtin:tiny-random-llama"
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert all(m["content"] in text for m in row["messages"])
        assert text.count("<|user|>") == text.count("<|assistant|>") == len(row["messages"]) // 2
