"""The synthesize stage's failure paths and `corpus synth`'s run identity, against the project's HTTP stub.

- engine errors leave a chunk unfinished (its good rows kept), a rerun retries only the failed requests, and a
  refresh does not count them as attempted; the run summary names them;
- `corpus synth` takes OUT's run lock, exits 1 when every request failed, keys its work folder by what shapes
  completions (a raised target extends the run, a new threshold sends no request) and publishes one
  `OUT/synth/midtrain`, so the contract's glob `OUT/**/midtrain/*.parquet` holds each dialogue once;
- grounding falls back to the published corpus, and says so loudly when there is none;
- bad settings (language, threshold keys, models) fail before any cluster starts.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.utils.logging import logger
from openai_stub import two_dialogues as answer

from synthetic.settings import OpenAISettings, SyntheticSettings

CORPUS = str(Path(sys.executable).with_name("corpus"))


def closed_port_url() -> str:
    """An endpoint that refuses connections: the port was free a moment ago and nothing listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def stage_config(tmp_path: Path, base_url: str, concurrency: int = 8, **synthetic):
    from pipelines.config import CorpusConfig

    settings = SyntheticSettings(
        engine="openai",
        model="stub-model",
        min_score=0.0,
        openai=OpenAISettings(base_url=base_url, max_retries=0, backoff_s=0.01, concurrency=concurrency),
        **{"target": 6, "chunk_size": 3, **synthetic},
    )
    return CorpusConfig(out=tmp_path / "out", synthetic=settings)


def with_url(config, base_url: str):
    openai = config.synthetic.openai.model_copy(update={"base_url": base_url})
    return config.model_copy(update={"synthetic": config.synthetic.model_copy(update={"openai": openai})})


# -- 1, 5, 7: engine errors are not finished work -----------------------------------------------------------------
def test_engine_errors_leave_chunks_unfinished_and_a_rerun_retries_only_them(
    chat_server, dask_client, tmp_path
):
    from pipelines.context import RunContext
    from pipelines.synthesize import run_synthesize

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        # every 3rd request the server sees fails (a 400 is not retried): 2 of 6, in one chunk or both
        flaky = chat_server(
            lambda body, n: (400, {"error": "overloaded"}, 0) if n % 3 == 0 else answer(body, n)
        )
        config = stage_config(tmp_path, flaky.base_url, concurrency=1)
        ctx = RunContext(config=config, client=dask_client, run_id="t-flaky")
        first = run_synthesize(ctx)
    finally:
        logger.remove(sink)
    assert first["attempted"] == 6 and first["engine_errors"] == 2
    assert first["chunks_incomplete"] in ([0], [1], [0, 1]) and "HTTP 400" in first["first_engine_error"]
    # the good rows of unfinished chunks are kept
    assert first["accepted"] >= 1 and pq.read_table(ctx.staging / "midtrain").num_rows == first["accepted"]
    # 7: one progress line per finished chunk, with the count of chunks and of dialogues that passed
    progress = [line for line in lines if "synthesize: chunk" in line]
    assert len(progress) == 2 and any("2/2 chunks" in line for line in progress)
    assert all("passed checks" in line for line in progress)

    good = chat_server(answer)
    second = run_synthesize(
        RunContext(config=with_url(config, good.base_url), client=dask_client, run_id="t-flaky")
    )
    assert good.count == 2, "only the two failed requests are sent again"
    unfinished = len(first["chunks_incomplete"])
    assert second["generated_requests"] == 2 and second["chunks_run"] == unfinished
    assert second["chunks_skipped"] == 2 - unfinished
    assert second["engine_errors"] == 0 and second["chunks_incomplete"] == [] and second["attempted"] == 6
    # every request sent counts, the earlier attempts' too (their successes are not sent again)
    assert second["generated_requests_total"] == flaky.count + good.count == 8

    third = run_synthesize(
        RunContext(config=with_url(config, good.base_url), client=dask_client, run_id="t-flaky")
    )
    assert third["chunks_skipped"] == 2 and third["generated_requests"] == 0 and good.count == 2


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_aborted_completions_are_retried_not_kept(chat_server, dask_client, tmp_path, reason):
    """A SIGTERM of the driver shut the workers' vLLM engines down mid-`LLM.chat`; vLLM returned the requests
    in flight cut off, with finish reason `abort`. They were cached and the chunk saved as finished, so the
    rerun replayed them: 232 of 240 dialogues lost for good, exit 0. Chunks and caches written that way by
    earlier code are repaired on the next run."""
    from openai_stub import completion_body

    from pipelines.context import RunContext
    from pipelines.synthesize import chunk_done, run_synthesize
    from synthetic.engine import UNFINISHED

    def cut_off(body, n):  # the first three requests come back unfinished, as vLLM returns them
        return (
            (200, completion_body('{"exchanges": [{"user": "I', 3, reason), 0) if n <= 3 else answer(body, n)
        )

    config = stage_config(tmp_path, chat_server(cut_off).base_url, concurrency=1)
    first = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-abort"))
    assert first["engine_errors"] == 3 and first["chunks_incomplete"]
    assert first["first_engine_error"].endswith(UNFINISHED[reason])  # after the retries (none here)
    good = chat_server(answer)
    config = with_url(config, good.base_url)
    second = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-abort"))
    assert good.count == 3 and second["engine_errors"] == 0 and second["attempted"] == 6
    assert second["chunks_incomplete"] == []

    # what earlier code left: an aborted completion in the cache and in a chunk saved as finished
    stage = next((tmp_path / "out" / "work" / "t-abort" / "synthesize").glob("v-*"))
    assert chunk_done(stage, 0, config.synthetic)
    chunk = stage / "chunks" / "chunk-00000.parquet"
    table = pq.read_table(chunk)
    reasons = table.column("finish_reason").to_pylist()
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("finish_reason"), "finish_reason", pa.array([reason, *reasons[1:]])
        ),
        chunk,
    )
    assert not chunk_done(stage, 0, config.synthetic), "a chunk holding an aborted completion is not finished"
    cache = next((tmp_path / "out" / "work" / "t-abort" / "synthesize").rglob("chunk-00000.jsonl"))
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    lines[0].update(text='{"exchanges": [{"user": "I', finish_reason=reason)
    cache.write_text("".join(json.dumps(line) + "\n" for line in lines))
    third = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-abort"))
    assert good.count == 4, "the aborted completion is asked for again, the others come from the cache"
    assert third["chunks_run"] == 1 and third["attempted"] == 6 and third["engine_errors"] == 0
    assert chunk_done(stage, 0, config.synthetic)


def test_a_completion_without_a_finish_reason_is_not_an_engine_error(chat_server, dask_client, tmp_path):
    """Some endpoints send `finish_reason: null`; the row was stored as "error: " and counted as an engine
    error, so a run whose every answer was fine said all its requests had failed."""
    from openai_stub import completion_body

    from pipelines.context import RunContext
    from pipelines.synthesize import run_synthesize

    def no_reason(body, n):
        status, payload, delay = answer(body, n)
        return status, completion_body(payload["choices"][0]["message"]["content"], 80, None), delay

    config = stage_config(tmp_path, chat_server(no_reason).base_url)
    summary = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-null"))
    assert summary["engine_errors"] == 0 and summary["chunks_incomplete"] == [] and summary["attempted"] == 6
    assert summary["parsed"] == 6 and summary["accepted"] >= 1


def test_refresh_state_does_not_count_engine_errors_and_the_run_summary_names_them(dask_client, tmp_path):
    from pipelines.context import RunContext
    from pipelines.graph import run_summary, synthesize_step

    config = stage_config(tmp_path, closed_port_url(), target=4, chunk_size=4)
    ctx = RunContext(config=config, client=dask_client, run_id="t-down", mode="full")
    summary, record = synthesize_step(ctx, None)
    assert summary["engine_errors"] == 4 and summary["accepted"] == 0
    assert record["attempted"] == 0, "engine errors must not use up synthetic.target for later refreshes"
    published = run_summary({"mode": "full", "version": "v1", "results": {"synthesize": summary}})
    assert published["dialogues_engine_errors"] == 4 and published["dialogues_attempted"] == 0
    # the chunk that holds them is left incomplete, and the summary says so
    assert published["dialogue_chunks_failed"] == 1 and published["dialogues_added"] == 0

    failed = run_summary(
        {
            "results": {
                "synthesize": {"attempted": 0, "chunks_failed": {"0": "boom"}, "chunks_missing": [0, 1]}
            }
        }
    )
    assert failed["dialogue_chunks_failed"] == 3


# -- 4: grounding ------------------------------------------------------------------------------------------------
def test_grounding_falls_back_to_the_published_corpus_and_warns_without_one(
    chat_server, dask_client, tmp_path
):
    from pipelines.context import RunContext
    from pipelines.synthesize import run_synthesize

    server = chat_server(answer)
    config = stage_config(tmp_path, server.base_url, target=4, chunk_size=4, grounding_fraction=1.0)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    try:
        bare = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-nogrounding"))
    finally:
        logger.remove(sink)
    assert bare["groundings"] == 0 and bare["grounding_source"] == "none"
    assert any("NO GROUNDING" in line for line in lines)

    out = config.out
    pretrain = out / "versions" / "v1" / "pretrain"
    pretrain.mkdir(parents=True)
    docs = {
        "id": ["a", "a", "b"],
        "text": ["Neighbours shared food after the flood.", "Neighbours shared food after the flood.", "x y"],
        "prosocial": [0.9, 0.9, 0.2],
        "repeat_index": [0, 1, 0],
    }
    pq.write_table(pa.table(docs), pretrain / "part-00000.parquet")
    os.symlink("versions/v1", out / "latest")
    # the same work folder: the empty choice of the first run was not kept, so this run finds the corpus
    grounded = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-nogrounding"))
    assert grounded["groundings"] == 2 and grounded["grounding_source"] == "published v1 pretrain"
    rows = pq.read_table(Path(grounded["chunks_dir"])).to_pylist()
    assert all(r["grounding_doc_id"] in {"a", "b"} for r in rows)

    # a new threshold re-judges the same prompts from the request cache: the excerpts are the work folder's,
    # not picked again (from a `latest` that may have moved meanwhile)
    sent = server.count
    os.remove(out / "latest")
    stricter = config.model_copy(update={"synthetic": config.synthetic.model_copy(update={"min_score": 0.9})})
    rejudged = run_synthesize(RunContext(config=stricter, client=dask_client, run_id="t-nogrounding"))
    assert rejudged["groundings"] == 2 and rejudged["grounding_source"] == "published v1 pretrain"
    assert server.count == sent and rejudged["generated_requests"] == 0


# -- 6: settings checked before any work -------------------------------------------------------------------------
def test_language_must_be_a_lid_code():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ValueError, match="lid.176 language code"):
        SyntheticSettings(language="english")
    with pytest.raises((ConfigError, ValueError), match="did you mean 'en'"):
        load_config(None, ["synthetic.language=EN"])
    assert SyntheticSettings(language="de").language == "de"


def test_min_scores_keys_are_dimensions():
    from pipelines.synthesize import preflight

    with pytest.raises(ValueError, match="unknown dimension 'kare' \\(did you mean 'care'\\?\\)"):
        preflight(SyntheticSettings(min_scores={"kare": 0.99}))
    preflight(SyntheticSettings(min_scores={"care": 0.99}))


def test_preflight_rejects_models_the_workers_could_not_load(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from pipelines.synthesize import preflight

    with pytest.raises(ValueError, match="unknown builtin model 'builtin:other'"):
        preflight(SyntheticSettings(model="builtin:other"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no tokenizer files"):
        preflight(SyntheticSettings(model=str(folder)))
    (folder / "tokenizer.json").write_text("{}")
    preflight(SyntheticSettings(model=str(folder)))

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    # no such repo (and no network here): the workers could not download it either
    with pytest.raises(
        ValueError, match="'nobody/absent-model' is not in the local Hugging Face cache.*Hub did not serve it"
    ):
        preflight(SyntheticSettings(model="nobody/absent-model"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="'nobody/absent-model' is not in .* and HF_HUB_OFFLINE is set"):
        preflight(SyntheticSettings(model="nobody/absent-model"))
    # the openai engine's model is the server's name for it: not looked up locally
    preflight(SyntheticSettings(model="nobody/absent-model", engine="openai"))
    snapshot = cache / "models--nobody--cached-model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--nobody--cached-model" / "refs").mkdir()
    (cache / "models--nobody--cached-model" / "refs" / "main").write_text("0" * 40)
    preflight(SyntheticSettings(model="nobody/cached-model"))


# -- 1, 2, 3: `corpus synth` as users run it ----------------------------------------------------------------------
def synth(tmp_path: Path, out: Path, base_url: str, *overrides: str) -> subprocess.CompletedProcess:
    args = [
        CORPUS,
        "synth",
        f"out={out}",
        "synthetic.engine=openai",
        "synthetic.model=stub-model",
        f"synthetic.openai.base_url={base_url}",
        "synthetic.openai.max_retries=0",
        "synthetic.target=4",
        "synthetic.chunk_size=2",
        "synthetic.min_score=0",
        "synthetic.grounding_fraction=0",
        "cluster.n_workers=1",
        f"cluster.local_directory={tmp_path / 'dask'}",
        *overrides,
    ]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def midtrain_ids(out: Path) -> list[str]:
    files = glob.glob(f"{out}/**/midtrain/*.parquet", recursive=True)  # DESIGN's contract for `corpus synth`
    return [i for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]


def test_corpus_synth_lock_errors_identity_and_one_published_midtrain(chat_server, tmp_path):
    from pipelines.publish.lock import RunLock

    out = tmp_path / "out"
    # 2: another run holds OUT's lock: exit 75 naming it, before any cluster or request
    with RunLock(out / "state" / "run.lock", "corpus run"):
        busy = synth(tmp_path, out, closed_port_url())
    assert busy.returncode == 75, busy.stderr[-2000:]
    assert "held by corpus run" in busy.stderr and not list(out.glob("work/synth-*"))

    # 1: endpoint down: exit 1 naming the count and the first error, nothing marked finished
    down = synth(tmp_path, out, closed_port_url())
    assert down.returncode == 1, down.stderr[-2000:]
    assert "all 4 request(s) failed in the engine (first: " in down.stderr
    assert json.loads(down.stdout)["engine_errors"] == 4
    assert not (out / "synth" / "midtrain").exists()  # an unfinished run publishes nothing

    server = chat_server(answer)
    up = synth(tmp_path, out, server.base_url)
    assert up.returncode == 0, up.stderr[-2000:]
    summary = json.loads(up.stdout)
    assert server.count == 4 and summary["generated_requests"] == 4 and summary["accepted"] >= 1
    assert Path(summary["midtrain_dir"]) == out / "synth" / "midtrain"

    # 3: a raised target (and another concurrency) extends the same run: only the new requests are sent
    more = synth(tmp_path, out, server.base_url, "synthetic.target=6", "synthetic.openai.concurrency=3")
    assert more.returncode == 0, more.stderr[-2000:]
    assert server.count == 6 and json.loads(more.stdout)["attempted"] == 6
    # ... a threshold change re-judges cached completions without a request
    judged = synth(tmp_path, out, server.base_url, "synthetic.target=6", "synthetic.min_language_score=0.99")
    assert judged.returncode == 0, judged.stderr[-2000:]
    assert server.count == 6 and json.loads(judged.stdout)["generated_requests"] == 0
    assert len(list(out.glob("work/synth-*"))) == 1
    # one published midtrain: every dialogue once under the contract's glob, as many as the last run accepted
    ids = midtrain_ids(out)
    assert len(ids) == len(set(ids)) == json.loads(judged.stdout)["accepted"]
    assert len(list((out / "synth" / ".generations").iterdir())) <= 2

    # a failed run with other settings never replaces the last finished run's dialogues
    failed = synth(tmp_path, out, closed_port_url(), "synthetic.target=6", "synthetic.seed=99")
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert sorted(midtrain_ids(out)) == sorted(ids)

    # next to a published version that holds them (`corpus run`'s round 0 has the same seed), they are
    # near-duplicates: `corpus synth` adds only dialogues the corpus does not have
    published = out / "versions" / "v1" / "midtrain"
    published.mkdir(parents=True)
    for part in (out / "synth" / "midtrain").glob("*.parquet"):
        (published / part.name).write_bytes(part.read_bytes())
    os.symlink("versions/v1", out / "latest")
    beside = synth(tmp_path, out, server.base_url, "synthetic.target=6", "synthetic.min_language_score=0.99")
    assert beside.returncode == 0, beside.stderr[-2000:]
    summary = json.loads(beside.stdout)
    before = json.loads(judged.stdout)
    # what the last run accepted is now a near-duplicate too (the stub's dialogues repeat each other as well)
    assert summary["accepted"] == 0
    near = summary["rejected_by_reason"]["near_duplicate"]
    assert near == before["rejected_by_reason"].get("near_duplicate", 0) + before["accepted"]
    assert not list((out / "synth" / "midtrain").glob("*.parquet"))
