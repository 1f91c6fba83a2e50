"""The openai engine against a real HTTP server on 127.0.0.1, and the whole stage on the Dask cluster with it."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest
from openai_stub import completion_body, two_dialogues

from synthetic.engine import EngineSpec, OpenAIEngine, Request
from synthetic.settings import OpenAISettings


def make_engine(base_url: str, **options) -> OpenAIEngine:
    settings = OpenAISettings(base_url=base_url, **options)
    return OpenAIEngine(EngineSpec(kind="openai", model="test-model", openai=settings.model_dump()))


def requests(n: int, schema: dict | None = None) -> list[Request]:
    return [
        Request.make(
            [{"role": "user", "content": f"say {i}"}],
            schema,
            0.7,
            0.9,
            64,
            run_seed=0,
            model="test-model",
            salt=i,
        )
        for i in range(n)
    ]


def test_retries_transient_errors_with_backoff(chat_server):
    server = chat_server(
        lambda body, n: (503, {"error": "busy"}, 0) if n <= 2 else (200, completion_body('{"ok": 1}'), 0)
    )
    engine = make_engine(server.base_url, max_retries=3, backoff_s=0.05)
    [result] = engine.generate(requests(1))
    assert result.error is None and result.text == '{"ok": 1}' and result.output_tokens == 10
    assert server.count == 3 and engine.attempts == 3


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_unfinished_answers_are_retried_like_server_errors(chat_server, reason):
    """A server draining or restarting answers `abort`: the request was lost to the run (an engine error until
    the next run) although a retry after the backoff gets it, as for a 503."""
    server = chat_server(
        lambda body, n: (
            (200, completion_body("cut", 2, reason), 0) if n <= 2 else (200, completion_body("ok"), 0)
        )
    )
    engine = make_engine(server.base_url, max_retries=3, backoff_s=0.01)
    [result] = engine.generate(requests(1))
    assert result.error is None and result.text == "ok" and server.count == 3
    stuck = chat_server(lambda body, n: (200, completion_body("cut", 2, reason), 0))
    [result] = make_engine(stuck.base_url, max_retries=1, backoff_s=0.01).generate(requests(1))
    assert (
        result.error.startswith("gave up after 2 attempts: ") and f"finish_reason '{reason}'" in result.error
    )
    assert stuck.count == 2


def test_client_errors_are_not_retried_and_are_reported(chat_server):
    server = chat_server(lambda body, n: (400, {"error": "bad request"}, 0))
    engine = make_engine(server.base_url, max_retries=3, backoff_s=0.01)
    [result] = engine.generate(requests(1))
    assert result.error.startswith("HTTP 400") and server.count == 1


def test_timeouts_give_up_after_the_retries(chat_server):
    server = chat_server(lambda body, n: (200, completion_body("late"), 30.0))
    engine = make_engine(server.base_url, timeout_s=0.2, max_retries=1, backoff_s=0.01)
    began = time.perf_counter()
    [result] = engine.generate(requests(1))
    assert "gave up after 2 attempts: timeout" in result.error
    assert time.perf_counter() - began < 10  # did not wait for the slow (30 s) answers ...
    assert server.in_flight >= 1  # ... which are still pending on the server
    assert engine.attempts == 2


def test_concurrency_is_bounded_and_order_is_kept(chat_server):
    def respond(body, n):
        return 200, completion_body(body["messages"][0]["content"]), 0.1

    server = chat_server(respond)
    engine = make_engine(server.base_url, concurrency=3)
    reqs = requests(12)
    seen = []
    results = engine.generate(reqs, on_result=seen.append)
    assert [r.text for r in results] == [f"say {i}" for i in range(12)]
    assert len(seen) == 12
    assert 2 <= server.max_in_flight <= 3


def test_json_schema_is_sent_as_response_format(chat_server):
    bodies = []

    def respond(body, n):
        bodies.append(body)
        return 200, completion_body("{}"), 0

    server = chat_server(respond)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    make_engine(server.base_url).generate(requests(1, schema))
    body = bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["model"] == "test-model" and isinstance(body["seed"], int)


# -- the whole stage on the real Dask cluster, with an HTTP engine -------------------------------------------------
def dialogue_server(chat_server):
    """Answers every request with one of two kind dialogues (so later ones are near-duplicates)."""
    return chat_server(two_dialogues)


def test_stage_runs_on_dask_with_near_duplicates_and_scores(
    chat_server, dask_client, tiny_bundle_path, tmp_path
):
    from classifiers.settings import ClassifierSettings
    from pipelines.config import CorpusConfig
    from pipelines.context import RunContext
    from pipelines.synthesize import run_synthesize
    from synthetic.settings import SyntheticSettings

    server = dialogue_server(chat_server)
    synthetic = SyntheticSettings(
        engine="openai",
        model="test-model",
        target=10,
        chunk_size=4,
        min_score=0.0,
        openai=OpenAISettings(base_url=server.base_url, concurrency=2),
    )
    config = CorpusConfig(
        out=tmp_path / "out", synthetic=synthetic, classifier=ClassifierSettings(bundle=str(tiny_bundle_path))
    )
    ctx = RunContext(config=config, client=dask_client, run_id="t-openai")
    summary = run_synthesize(ctx)
    assert summary["attempted"] == 10 and summary["parseable_fraction"] == 1.0
    assert summary["chunks"] == 3 and summary["chunks_run"] == 3 and summary["gpu"] is False
    assert summary["generated_requests"] == 10 and server.count == 10
    # two distinct dialogues: the first of each is kept, every later copy is a recorded near-duplicate
    assert summary["accepted"] == 2 and summary["rejected_by_reason"] == {"near_duplicate": 8}
    table = pq.read_table(ctx.staging / "midtrain")
    assert table.num_rows == 2
    row = table.to_pylist()[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["validation"]["passed"] and row["validation"]["language"] == "en"
    assert 0.0 <= row["ps_care"] <= 1.0 and row["model"] == "test-model"
    # rejected attempts are kept, with reasons, in the work folder
    [variant] = (ctx.work / "synthesize").glob("v-*")
    chunks = pq.read_table(variant / "chunks")
    assert chunks.num_rows == 10 and "raw" in chunks.column_names

    # rerun: every chunk is skipped, nothing is requested again
    again = run_synthesize(ctx)
    assert again["chunks_skipped"] == 3 and again["chunks_run"] == 0 and again["generated_requests"] == 0
    assert server.count == 10 and again["accepted"] == 2

    # a new threshold in the same run folder: its own chunk files, verdicts redone from the request cache
    def with_settings(**update):
        return RunContext(
            config=config.model_copy(update={"synthetic": synthetic.model_copy(update=update)}),
            client=dask_client,
            run_id="t-openai",
        )

    high = run_synthesize(with_settings(min_score=0.999))
    assert high["attempted"] == 10 and high["chunks_run"] == 3 and high["generated_requests"] == 0
    assert server.count == 10
    assert all(r.startswith("low_score_") or r == "near_duplicate" for r in high["rejected_by_reason"])
    assert any(r.startswith("low_score_") for r in high["rejected_by_reason"])
    assert len(list((ctx.work / "synthesize").glob("v-*"))) == 2

    # a new seed (as a refresh top-up round uses): new scenarios, new requests, never the old chunks
    reseeded = run_synthesize(with_settings(seed=1))
    assert reseeded["chunks_skipped"] == 0 and reseeded["generated_requests"] == 10 and server.count == 20


def test_stage_counts_engine_errors_and_keeps_going(chat_server, dask_client, tmp_path):
    from pipelines.config import CorpusConfig
    from pipelines.context import RunContext
    from pipelines.synthesize import run_synthesize
    from synthetic.settings import SyntheticSettings

    server = chat_server(lambda body, n: (400, {"error": "model not found"}, 0))
    synthetic = SyntheticSettings(
        engine="openai",
        model="m",
        target=3,
        chunk_size=3,
        min_score=0.0,
        openai=OpenAISettings(base_url=server.base_url, max_retries=0),
    )
    config = CorpusConfig(out=tmp_path / "out", synthetic=synthetic)
    summary = run_synthesize(RunContext(config=config, client=dask_client, run_id="t-errors"))
    assert summary["attempted"] == 3 and summary["engine_errors"] == 3
    assert summary["rejected_by_reason"]["engine_error"] == 3 and summary["accepted"] == 0
    assert summary["cached_requests_total"] == 0  # errors are retried by the next run, not cached


def test_gpu_resources_are_requested_when_the_cluster_has_gpus():
    from distributed import Client, LocalCluster

    from pipelines.synthesize import task_resources
    from synthetic.settings import SyntheticSettings

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1}, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert task_resources(SyntheticSettings(), client) == {"GPU": 1}
        assert task_resources(SyntheticSettings(engine="openai"), client) is None
        with pytest.raises(ValueError, match="tensor_parallel_size=2"):
            task_resources(SyntheticSettings(tensor_parallel_size=2), client)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert task_resources(SyntheticSettings(), client) is None


@pytest.mark.parametrize("model", ["/definitely/not/here", "./nope-model"])
def test_preflight_rejects_missing_local_model(model):
    from pipelines.synthesize import preflight
    from synthetic.settings import SyntheticSettings

    with pytest.raises(ValueError, match="local model folder not found"):
        preflight(SyntheticSettings(model=model))
