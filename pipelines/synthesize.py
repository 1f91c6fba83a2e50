"""The synthesize stage and `corpus synth`: scenarios -> dialogues -> validation -> mid-training Parquet.

Two phases:

1. **Chunks** (a datatrove pipeline on the DaskPipelineExecutor, one rank per chunk of `chunk_size`
   dialogues). Each rank rebuilds its scenarios from (seed, index), sends every prompt of the chunk to the
   worker's engine in one batch (vLLM is loaded once per worker process and reused by later ranks), runs the
   per-dialogue checks and writes *every attempt*, accepted or rejected with its reasons, to
   `work/<run>/synthesize/v-<settings hash>/chunks/chunk-NNNNN.parquet`. Ranks request `resources={"GPU": tensor_parallel_size}`
   when the cluster advertises GPUs (`task_resources`). Completed chunks are skipped on rerun, and a request cache
   (`synthesize/cache/`, keyed by request content) means a retried rank sends only the requests it has no
   completion for.
2. **Finalize** (on the client, in scenario order so the result never depends on which task finished first):
   near-duplicates across the run (MinHash), then the accepted dialogues go to `<staging>/midtrain/` in chat
   format and the counts, every rejection by reason, to `synthesize/summary.json` and the returned dict.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from pipelines.atomic import write_json_atomic
from pipelines.parquet import list_parquet, write_table_atomic
from synthetic.schema import dialogue_schema
from synthetic.settings import SyntheticSettings

if TYPE_CHECKING:
    from pipelines.context import RunContext

STAGE = "synthesize"


class SynthesizeChunks(PipelineStep):
    """Rank r generates and validates dialogues [r*chunk_size, (r+1)*chunk_size) and writes one chunk file."""

    type = "🤖 - SYNTH"
    name = "💬 dialogues"

    def __init__(
        self,
        settings: dict[str, Any],
        stage_dir: str,
        bundle_path: str | None,
        groundings: list[tuple[str, str]],
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.settings = settings
        self.stage_dir = stage_dir
        self.bundle_path = bundle_path
        self.groundings = groundings
        self.cache_dir = cache_dir or str(Path(stage_dir) / "cache")

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from synthetic.generate import run_chunk
        from synthetic.scenarios import Grounding, ScenarioSampler, load_grid

        stage = Path(self.stage_dir)
        chunk_path = stage / "chunks" / f"chunk-{rank:05d}.parquet"
        if chunk_path.is_file():
            self.stat_update("chunks_skipped")
            return
        settings = SyntheticSettings.model_validate(self.settings)
        grid = load_grid(settings.grid)
        sampler = ScenarioSampler(
            grid,
            seed=settings.seed,
            dimensions=settings.dimensions or None,
            groundings=[Grounding(i, t) for i, t in self.groundings],
            grounding_fraction=settings.grounding_fraction,
        )
        with self.track_time("chunk"):
            result = run_chunk(
                settings,
                grid,
                sampler,
                rank,
                Path(self.cache_dir) / f"chunk-{rank:05d}.jsonl",
                self.bundle_path,
            )
        for note in result.notes:
            logger.warning(f"chunk {rank}: {note}")
        counts = {k: int(v) for k, v in result.counts.items()}
        for key, value in counts.items():
            if value:
                self.stat_update(key.replace("reason:", "rejected_"), value=value)
        # the sidecar first: a chunk file never exists without its counts
        write_json_atomic(stage / "counts" / f"chunk-{rank:05d}.json", counts, sort_keys=True)
        table = pa.Table.from_pylist(result.rows, schema=dialogue_schema(result.dimensions, attempts=True))
        write_table_atomic(table, chunk_path)
        yield from ()


# -- grounding ----------------------------------------------------------------------------------------------
def _excerpt(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > max_chars // 3 else cut


def grounding_files(source: str | Path) -> list[str]:
    """The Parquet files of `synthetic.grounding_input`: a folder, a file, or a glob (absolute or relative)."""
    path = Path(source)
    if path.is_dir():
        return list_parquet(path)
    if path.is_file():
        return [str(path)]
    return sorted(glob.glob(str(source), recursive=True))


def select_groundings(source: str | Path | None, top_k: int, max_chars: int) -> list[tuple[str, str]]:
    """(doc id, excerpt) of the top-K scored documents by `prosocial` (ties by id), or [] without input."""
    if not source:
        return []
    files = grounding_files(source)
    best: list[tuple[float, str, str]] = []
    for file in files:
        schema = pq.read_schema(file)
        if "id" not in schema.names or "text" not in schema.names:
            raise ValueError(f"{file}: grounding input needs columns id and text (a scored Parquet file)")
        columns = ["id", "text"] + [c for c in ("prosocial",) if c in schema.names]
        table = pq.read_table(file, columns=columns)
        score = table["prosocial"] if "prosocial" in columns else pa.nulls(table.num_rows, pa.float64())
        score = pc.fill_null(score.cast(pa.float64()), 0.0)
        table = table.append_column("score", pc.if_else(pc.is_nan(score), 0.0, score))  # NaN would not sort
        table = table.filter(pc.greater(pc.utf8_length(table["text"]), 0))
        # the file's own top K in Arrow (a shard holds ~100k documents: no Python tuple per document)
        order = pc.sort_indices(table, [("score", "descending"), ("id", "ascending"), ("text", "ascending")])
        top = table.take(order[:top_k])
        best += zip(
            [-v for v in top["score"].to_pylist()],
            top["id"].to_pylist(),
            top["text"].to_pylist(),
            strict=True,
        )
        best.sort()
        del best[top_k:]
    return [(doc_id, _excerpt(text, max_chars)) for _, doc_id, text in best]


def _groundings(settings: SyntheticSettings, stage: Path, fallback: str | None) -> list[tuple[str, str]]:
    """Chosen once per run and kept in the work folder, so a resumed run builds the same scenarios."""
    saved = stage / "groundings.parquet"
    if saved.is_file():
        table = pq.read_table(saved)
        return list(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    if settings.grounding_fraction <= 0:
        chosen: list[tuple[str, str]] = []
    else:
        chosen = select_groundings(
            settings.grounding_input or fallback, settings.grounding_top_k, settings.excerpt_chars
        )
    table = pa.table(
        {"id": [c[0] for c in chosen], "text": [c[1] for c in chosen]},
        schema=pa.schema([("id", pa.string()), ("text", pa.string())]),
    )
    write_table_atomic(table, saved)
    return chosen


# -- checks before any work ----------------------------------------------------------------------------------
def preflight(settings: SyntheticSettings) -> None:
    """Fail in the first second on a bad grid, unknown dimensions or a missing local model folder."""
    from synthetic.scenarios import ScenarioSampler, load_grid

    grid = load_grid(settings.grid)
    ScenarioSampler(grid, seed=settings.seed, dimensions=settings.dimensions or None)
    model = settings.model
    looks_local = model.startswith(("/", "./", "../", "~")) or Path(model).exists()
    if not model:
        raise ValueError("synthetic.model: empty (a hub id, a local path or builtin:tiny-random-llama)")
    if looks_local and not model.startswith("builtin:") and not Path(model).expanduser().is_dir():
        raise ValueError(f"synthetic.model: local model folder not found: {model}")
    if (
        settings.grounding_fraction > 0
        and settings.grounding_input
        and not grounding_files(settings.grounding_input)
    ):
        # a typo would otherwise turn grounding off for the whole run, without a word
        raise ValueError(f"synthetic.grounding_input: no Parquet files match {settings.grounding_input}")


# -- finalize -----------------------------------------------------------------------------------------------
def finalize(settings: SyntheticSettings, stage: Path, midtrain: Path, n_chunks: int) -> dict[str, Any]:
    """Run-level near-duplicate check, then write accepted dialogues (chat format) and count everything."""
    from synthetic.validate import NearDuplicates

    dedup = NearDuplicates(threshold=settings.near_dup_threshold)
    # dialogues carried from the published version (refresh) come first: a top-up must not repeat them
    for carried in sorted(midtrain.glob("carry-*.parquet")):
        table = pq.read_table(carried, columns=["id", "messages"])
        for doc_id, messages in zip(table["id"].to_pylist(), table["messages"].to_pylist(), strict=True):
            dedup.check(doc_id, "\n".join(m["content"] for m in messages))
    counts: Counter = Counter()
    reasons: Counter = Counter()
    by_dimension: Counter = Counter()
    midtrain.mkdir(parents=True, exist_ok=True)
    expected = set()
    missing = []
    for chunk in range(n_chunks):
        path = stage / "chunks" / f"chunk-{chunk:05d}.parquet"
        if not path.is_file():
            missing.append(chunk)
            continue
        sidecar = stage / "counts" / f"chunk-{chunk:05d}.json"
        if sidecar.is_file():
            for key in ("generated", "cached", "output_tokens", "generate_ms"):
                counts[key] += int(json.loads(sidecar.read_text()).get(key, 0))
        table = pq.read_table(path)
        dims = [n[3:] for n in table.schema.names if n.startswith("ps_")]
        accepted = []
        for row in table.to_pylist():
            counts["attempted"] += 1
            validation = row["validation"]
            if row["finish_reason"] is not None and row["finish_reason"].startswith("error"):
                counts["engine_errors"] += 1
            elif "unparseable" not in validation["reasons"] and "truncated" not in validation["reasons"]:
                counts["parsed"] += 1
            if validation["passed"]:
                text = "\n".join(m["content"] for m in row["messages"])
                other = dedup.check(row["id"], text)
                if other is not None:
                    validation["passed"] = False
                    validation["reasons"] = ["near_duplicate"]
                    validation["near_duplicate_of"] = other
            for reason in validation["reasons"]:
                reasons[reason] += 1
            if validation["passed"]:
                row.pop("raw", None)
                accepted.append(row)
                by_dimension[row["dimension"]] += 1
            else:
                counts["rejected"] += 1
        counts["accepted"] += len(accepted)
        if accepted:  # no empty files: `datasets` refuses a Parquet file without rows
            name = f"part-{chunk:05d}.parquet"
            expected.add(name)
            write_table_atomic(pa.Table.from_pylist(accepted, schema=dialogue_schema(dims)), midtrain / name)
    for stale in midtrain.glob("part-*.parquet"):
        if stale.name not in expected:
            stale.unlink()
    attempted_ok = counts["attempted"] - counts["engine_errors"]
    return {
        "attempted": counts["attempted"],
        "parsed": counts["parsed"],
        "parseable_fraction": round(counts["parsed"] / attempted_ok, 4) if attempted_ok else None,
        "engine_errors": counts["engine_errors"],
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "rejected_by_reason": dict(sorted(reasons.items())),
        "accepted_by_dimension": dict(sorted(by_dimension.items())),
        "generated_requests_total": counts["generated"],
        "cached_requests_total": counts["cached"],
        "output_tokens_total": counts["output_tokens"],
        "chunks_missing": missing,
    }


# -- the stage ------------------------------------------------------------------------------------------------
# Settings that only say how requests travel or where engines run: they never change a dialogue or its verdict.
_TRANSPORT = {
    "enabled",
    "strict",
    "openai",
    "cpu_kvcache_gb",
    "gpu_memory_utilization",
    "enforce_eager",
    "tensor_parallel_size",
}


def variant_key(settings: SyntheticSettings, bundle_path: str | None) -> str:
    """Hash of everything that decides a chunk's content and verdicts (seed, target, model, grid, thresholds,
    bundle...). Chunk files and completion markers live under `v-<key>/`, so a rerun with other settings
    (a refresh top-up round with a new seed, a rebuilt bundle, an edited grid) never reuses chunks made for
    different ones, while the request cache of the work folder, keyed by request content, stays shared."""
    import hashlib

    from classifiers.bundle import BundleError, read_manifest
    from synthetic.scenarios import resolve_grid_path

    data = settings.model_dump(mode="json", exclude=_TRANSPORT)
    # contents, not paths: a bundle rebuilt in place (or built after a first run without one) and an edited
    # grid must not reuse chunks judged or written under the old ones
    try:
        data["bundle"] = read_manifest(Path(bundle_path))["version"] if bundle_path else None
    except BundleError:
        data["bundle"] = f"unavailable:{bundle_path}"
    data["grid"] = hashlib.sha256(resolve_grid_path(settings.grid).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def release_engines(client: Any) -> None:
    """Close the engine each worker cached: frees ~3 GB per worker for later stages and shuts vLLM's engine
    processes down cleanly (a worker torn down with a live engine would orphan them)."""
    if client is None:
        return
    from synthetic.engine import close_engine

    try:
        client.run(close_engine)
    except Exception as exc:  # a worker that died already has nothing to release
        logger.warning(f"synthesize: could not release engines on every worker: {exc}")


def task_resources(settings: SyntheticSettings, client: Any) -> dict[str, float] | None:
    """`{"GPU": tensor_parallel_size}` for vLLM tasks when workers advertise GPUs, else None (CPU vLLM).

    Each engine then gets devices of its own. A worker must advertise at least tensor_parallel_size GPUs
    (`dask worker --resources GPU=N`); if none does, the tasks could never start, so this fails at once.
    """
    if settings.engine != "vllm" or client is None:
        return None
    info = client.scheduler_info(n_workers=-1)
    gpus = [w.get("resources", {}).get("GPU", 0) for w in info.get("workers", {}).values()]
    if not any(g > 0 for g in gpus):
        return None
    need = settings.tensor_parallel_size
    if max(gpus) < need:
        raise ValueError(
            f"synthetic.tensor_parallel_size={need} but the largest worker advertises GPU={max(gpus)}: "
            f"start workers with --resources GPU={need}"
        )
    return {"GPU": need}


def run_synthesize(ctx: RunContext, force: bool = False) -> dict[str, Any]:
    """Generate `synthetic.target` dialogues on the cluster and stage the accepted ones in `midtrain/`.

    Inside `corpus run` the stage is skipped when `synthetic.enabled` is false; `corpus synth` forces it.
    """
    from pipelines.executor import DaskPipelineExecutor, RankFailed
    from synthetic.generate import n_chunks

    settings = ctx.config.synthetic
    if not settings.enabled and not force:
        return {"enabled": False, "attempted": 0, "reason": "synthetic.enabled is false"}
    if settings.target == 0:
        return {"enabled": False, "attempted": 0, "reason": "synthetic.target is 0"}
    preflight(settings)
    start = time.time()
    from classifiers.bundle import resolve_bundle_path

    # absolute: workers may start in another folder
    bundle_path = os.path.abspath(resolve_bundle_path(ctx.config.classifier.bundle))
    root = ctx.stage_dir(STAGE)
    stage = root / f"v-{variant_key(settings, bundle_path)}"
    stage.mkdir(parents=True, exist_ok=True)
    midtrain = ctx.staging / "midtrain"
    fallback = None
    for previous in ("dedup", "curate"):
        output = (ctx.results.get(previous) or {}).get("output_dir")
        if output:
            fallback = output
            break
    groundings = _groundings(settings, stage, fallback)
    chunks = n_chunks(settings.target, settings.chunk_size)
    before = {p.name for p in (stage / "chunks").glob("chunk-*.parquet")}
    resources = task_resources(settings, ctx.client)
    executor = DaskPipelineExecutor(
        [
            SynthesizeChunks(
                settings.model_dump(mode="json"), str(stage), bundle_path, groundings, str(root / "cache")
            )
        ],
        tasks=chunks,
        logging_dir=str(stage / "logs"),
        client=ctx.client,
        resources=resources,
        name="synthesize",
        progress=False,
    )
    failed: dict[int, str] = {}
    try:
        executor.run()
    except RankFailed as exc:
        if settings.strict or ctx.config.strict:
            raise
        failed = exc.failures
        logger.error(str(exc))
    finally:
        release_engines(ctx.client)
    after = {p.name for p in (stage / "chunks").glob("chunk-*.parquet")}
    summary = finalize(settings, stage, midtrain, chunks)
    ran_now = sorted(after - before)
    generated_now = 0
    for name in ran_now:
        sidecar = stage / "counts" / name.replace(".parquet", ".json")
        if sidecar.is_file():
            generated_now += int(json.loads(sidecar.read_text()).get("generated", 0))
    summary.update(
        {
            "enabled": True,
            "model": settings.model,
            "engine": settings.engine,
            "gpu": bool(resources),
            "target": settings.target,
            "chunks": chunks,
            "chunks_run": len(ran_now),
            "chunks_skipped": len(before & after),
            "chunks_failed": {str(k): v for k, v in sorted(failed.items())},
            "generated_requests": generated_now,
            "midtrain_dir": str(midtrain),
            "chunks_dir": str(stage / "chunks"),
            "seconds": round(time.time() - start, 1),
        }
    )
    write_json_atomic(stage / "summary.json", summary, indent=2, sort_keys=True)
    logger.info(
        f"synthesize: {summary['attempted']} attempted, {summary['accepted']} accepted, "
        f"rejected by reason {summary['rejected_by_reason']}"
    )
    return summary


# -- `corpus synth` -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. out=/data/x synthetic.model=org/name synthetic.target=1000 synthetic.min_score=0.6",
    )


def main(args: argparse.Namespace) -> int:
    from pipelines.cluster import connect
    from pipelines.config import load_config
    from pipelines.context import RunContext
    from pipelines.graph import config_hash
    from pipelines.stdout import summary_stdout

    config = load_config(args.config, args.overrides)
    try:
        preflight(config.synthetic)
    except ValueError as exc:
        from pipelines.config import ConfigError

        raise ConfigError(str(exc)) from None
    run_id = f"synth-{config_hash(config)[:12]}"
    with summary_stdout() as out:
        with connect(config.cluster) as client:
            ctx = RunContext(config=config, client=client, run_id=run_id)
            summary = run_synthesize(ctx, force=True)
        summary["run_id"] = run_id
        print(json.dumps(summary, indent=2, default=str), file=out)
    return 1 if summary.get("chunks_failed") or summary.get("chunks_missing") else 0
