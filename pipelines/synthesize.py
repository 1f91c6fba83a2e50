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
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from pipelines.atomic import write_json_atomic
from pipelines.parquet import list_parquet, write_table_atomic
from synthetic.engine import FINAL_ERRORS
from synthetic.schema import dialogue_schema
from synthetic.settings import SyntheticSettings
from synthetic.validate import VALIDATION_VERSION

if TYPE_CHECKING:
    from pipelines.context import RunContext

STAGE = "synthesize"


def chunk_paths(stage: Path, chunk: int, complete: bool = True) -> tuple[Path, Path]:
    """(attempts Parquet, counts sidecar) of a chunk: `chunk-NNNNN` when finished, `incomplete-NNNNN` when
    some of its requests were engine errors (kept for the summary and its good rows, retried on rerun)."""
    name = f"{'chunk' if complete else 'incomplete'}-{chunk:05d}"
    return stage / "chunks" / f"{name}.parquet", stage / "counts" / f"{name}.json"


def _expected_rows(settings: SyntheticSettings, chunk: int) -> int:
    from synthetic.generate import chunk_bounds

    start, stop = chunk_bounds(chunk, settings.chunk_size, settings.target)
    return max(0, stop - start)


def _rows(path: Path) -> int | None:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def _sidecar(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _unfinished_rows(path: Path) -> bool:
    """Whether the attempts hold completions the engine did not finish (finish reason `abort` or `error`),
    which earlier code kept as finished (see `synthetic.engine.finished`); such a chunk is run again, and the
    request cache no longer replays them."""
    from synthetic.engine import UNFINISHED

    try:
        reasons = pq.read_table(path, columns=["finish_reason"]).column("finish_reason")
    except (OSError, KeyError, pa.ArrowInvalid):
        return False
    return not UNFINISHED.keys().isdisjoint(reasons.to_pylist())


def _finished_file(path: Path, sidecar: Path) -> bool:
    """A `chunk-` file whose sidecar counts no engine error and whose rows hold no unfinished completion
    (earlier code saved both kinds of chunk as finished)."""
    return (
        path.is_file()
        and not int(_sidecar(sidecar).get("reason:engine_error", 0))
        and not _unfinished_rows(path)
    )


def chunk_done(stage: Path, chunk: int, settings: SyntheticSettings) -> bool:
    """A finished chunk of this target: its file holds every scenario of its range and no engine error.

    The row count, not the file alone: the target is not part of the variant folder, so a raised target
    extends the last chunk (rerun from the request cache) instead of regenerating the run. The sidecar check
    also catches chunks written by earlier code that saved engine errors as finished.
    """
    path, sidecar = chunk_paths(stage, chunk)
    return _finished_file(path, sidecar) and _rows(path) == _expected_rows(settings, chunk)


def chunk_attempts(stage: Path, chunk: int) -> tuple[Path, Path, bool] | None:
    """(Parquet, sidecar, finished) of the chunk's latest attempts, or None when it has none.

    A `chunk-` file whose sidecar counts engine errors (written by earlier code) is not finished. The row count
    is the executor's business (`chunk_done` reruns a chunk of another target); a rerun that failed leaves the
    old file, which the summary still counts, next to the failure it reports.
    """
    done, done_sidecar = chunk_paths(stage, chunk)
    if _finished_file(done, done_sidecar):
        return done, done_sidecar, True
    part, part_sidecar = chunk_paths(stage, chunk, complete=False)
    if part.is_file():
        return part, part_sidecar, False
    if done.is_file():
        return done, done_sidecar, False
    return None


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
        settings = SyntheticSettings.model_validate(self.settings)
        if chunk_done(stage, rank, settings):
            self.stat_update("chunks_skipped")
            return
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
        errors = counts.get("reason:engine_error", 0)
        done_path, done_sidecar = chunk_paths(stage, rank)
        part_path, part_sidecar = chunk_paths(stage, rank, complete=False)
        # what earlier, incomplete attempts of this chunk generated still counts in the run's totals
        earlier = _sidecar(part_sidecar) if part_path.is_file() else {}
        for key in ("generated", "output_tokens", "generate_ms"):
            counts[key] = counts.get(key, 0) + int(earlier.get(key, 0))
        table = pa.Table.from_pylist(result.rows, schema=dialogue_schema(result.dimensions, attempts=True))
        if errors:
            # not finished: kept as `incomplete-` (the summary counts it, finalize keeps its good rows) and no
            # completion marker counts (run_synthesize clears it), so a rerun retries the failed requests; the
            # request cache holds only successful completions, so nothing else is generated again
            # a finished file of another target must not win over this one: gone before this is written
            done_path.unlink(missing_ok=True)
            done_sidecar.unlink(missing_ok=True)
            write_json_atomic(part_sidecar, counts, sort_keys=True)
            write_table_atomic(table, part_path)
            logger.warning(
                f"chunk {rank}: {errors} of {len(result.rows)} request(s) failed in the engine; "
                "the chunk is not finished and a rerun retries them"
            )
        else:
            # the sidecar first: a chunk file never exists without its counts
            write_json_atomic(done_sidecar, counts, sort_keys=True)
            write_table_atomic(table, done_path)
            part_path.unlink(missing_ok=True)
            part_sidecar.unlink(missing_ok=True)
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
        columns = ["id", "text"] + [c for c in ("prosocial", "repeat_index") if c in schema.names]
        table = pq.read_table(file, columns=columns)
        if "repeat_index" in columns:  # a published mixture repeats documents: one copy each
            table = table.filter(pc.equal(table["repeat_index"], 0))
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


def _groundings(
    settings: SyntheticSettings, stage: Path, fallback: str | None, fallback_name: str
) -> tuple[list[tuple[str, str]], str]:
    """(excerpts, where they came from), chosen once per run and kept in the work folder, so a resumed run
    builds the same scenarios.

    An empty choice is not kept when grounding is wanted: a later run may find a source (a corpus published
    since), and keeping "none" would leave the run ungrounded for good.
    """
    saved = stage / "groundings.parquet"
    if saved.is_file():
        table = pq.read_table(saved)
        source = (table.schema.metadata or {}).get(b"source", b"an earlier run").decode()
        pairs = zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
        return list(pairs), source
    source = settings.grounding_input or fallback_name
    if settings.grounding_fraction <= 0:
        chosen: list[tuple[str, str]] = []
        source = "none (synthetic.grounding_fraction is 0)"
    else:
        chosen = select_groundings(
            settings.grounding_input or fallback, settings.grounding_top_k, settings.excerpt_chars
        )
        if not chosen:
            return [], source
    table = pa.table(
        {"id": [c[0] for c in chosen], "text": [c[1] for c in chosen]},
        schema=pa.schema([("id", pa.string()), ("text", pa.string())], metadata={"source": source}),
    )
    write_table_atomic(table, saved)
    return chosen, source


# -- checks before any work ----------------------------------------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def _hub_cached(model: str) -> bool:
    """Whether the hub id has a snapshot (its config.json) in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id at all
        return False
    return isinstance(found, str)


def check_model(settings: SyntheticSettings) -> None:
    """The generator model can be loaded by the workers: a known builtin, a local folder with a config and
    tokenizer files, or a hub id that is cached here or that the Hub has.

    Why before any work: a model the workers cannot load fails at engine start, after `corpus run` spent hours
    on the corpus stages, with an error that names no setting. A hub id that is not cached is accepted when the
    Hub answers for it (each worker then downloads it, which is logged), and refused offline. The openai engine
    sends the name to the server, which resolves it: not checked.
    """
    from synthetic.tiny_model import BUILTIN_PREFIX, TINY_MODEL_ID

    model = settings.model
    if not model:
        raise ValueError(f"synthetic.model: empty (a hub id, a local path or {TINY_MODEL_ID})")
    if model.startswith(BUILTIN_PREFIX):
        if model != TINY_MODEL_ID:
            raise ValueError(f"synthetic.model: unknown builtin model {model!r} (known: {TINY_MODEL_ID})")
        return
    if settings.engine != "vllm":  # the server's name for its model (`vllm serve /models/x`: a server path)
        return
    folder = Path(model).expanduser()
    looks_local = model.startswith(("/", "./", "../", "~")) or folder.exists()
    if looks_local and not folder.is_dir():
        raise ValueError(f"synthetic.model: local model folder not found: {model}")
    if looks_local:
        if not (folder / "config.json").is_file():
            raise ValueError(f"synthetic.model: {model} has no config.json (not a Hugging Face model folder)")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ValueError(
                f"synthetic.model: {model} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
                "save the tokenizer next to the weights (tokenizer.save_pretrained)"
            )
        return
    if _hub_cached(model):
        return
    from huggingface_hub import HfApi, constants

    missing = f"synthetic.model: {model!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    fix = f"download it first (`hf download {model}`), point HF_HOME at a cache that has it, or use a local folder"
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"{missing} and HF_HUB_OFFLINE is set: {fix}")
    # an unreachable Hub or an unknown repo: the workers could not download it either
    try:
        HfApi().model_info(model, timeout=10)
    except Exception as exc:
        raise ValueError(
            f"{missing}, and the Hub did not serve it ({type(exc).__name__}: {exc}): {fix}"
        ) from None
    logger.warning(
        f"{missing}: every worker downloads it at engine start (a shared HF_HOME downloads it once)"
    )


def check_min_scores(settings: SyntheticSettings, grid_dimensions: list[str]) -> None:
    """A typo'd `synthetic.min_scores` key would silently leave that dimension at `min_score`."""
    from classifiers.taxonomy import load_taxonomy
    from classifiers.yamlconfig import did_you_mean

    try:
        known = set(grid_dimensions) | set(load_taxonomy().dimensions)
    except Exception:  # a broken taxonomy is the classifier's error to report; the grid's names still count
        known = set(grid_dimensions)
    for key in settings.min_scores:
        if key not in known:
            raise ValueError(
                f"synthetic.min_scores: unknown dimension {key!r}{did_you_mean(key, known)}; "
                f"known: {', '.join(sorted(known))}"
            )


def preflight(settings: SyntheticSettings) -> None:
    """Fail in the first second on a bad grid, unknown dimensions or threshold keys, or a model the workers
    could not load (unknown builtin, folder without tokenizer, hub id not cached)."""
    from synthetic.scenarios import ScenarioSampler, load_grid

    grid = load_grid(settings.grid)
    ScenarioSampler(grid, seed=settings.seed, dimensions=settings.dimensions or None)
    check_min_scores(settings, list(grid.dimensions))
    check_model(settings)
    if (
        settings.grounding_fraction > 0
        and settings.grounding_input
        and not grounding_files(settings.grounding_input)
    ):
        # a typo would otherwise turn grounding off for the whole run, without a word
        raise ValueError(f"synthetic.grounding_input: no Parquet files match {settings.grounding_input}")


# -- finalize -----------------------------------------------------------------------------------------------
def _latest_folder(out: Path, name: str) -> tuple[Path, str] | None:
    """(`name` folder of the version `OUT/latest` serves, that version's id), if it has Parquet files there."""
    from pipelines.publish.publish import latest_version, versions_dir

    latest = latest_version(out)
    folder = versions_dir(out) / latest / name if latest else None
    return (folder, latest) if folder is not None and folder.is_dir() and list_parquet(folder) else None


def finalize(
    settings: SyntheticSettings, stage: Path, midtrain: Path, n_chunks: int, published: Path | None = None
) -> dict[str, Any]:
    """Run-level near-duplicate check, then write accepted dialogues (chat format) and count everything.

    `published`: dialogues this run must not repeat (`corpus synth` next to a published version)."""
    from synthetic.validate import NearDuplicates

    dedup = NearDuplicates(threshold=settings.near_dup_threshold)
    # dialogues carried from the published version (refresh) come first: a top-up must not repeat them
    known = sorted(midtrain.glob("carry-*.parquet")) + (list_parquet(published) if published else [])
    for carried in known:
        table = pq.read_table(carried, columns=["id", "messages"])
        for doc_id, messages in zip(table["id"].to_pylist(), table["messages"].to_pylist(), strict=True):
            dedup.check(doc_id, "\n".join(m["content"] for m in messages))
    counts: Counter = Counter()
    reasons: Counter = Counter()
    by_dimension: Counter = Counter()
    midtrain.mkdir(parents=True, exist_ok=True)
    expected = set()
    missing = []
    incomplete = []
    first_error = None
    for chunk in range(n_chunks):
        found = chunk_attempts(stage, chunk)
        if found is None:
            missing.append(chunk)
            continue
        path, sidecar, finished = found
        if not finished:
            incomplete.append(chunk)
        if sidecar.is_file():
            for key in ("generated", "cached", "output_tokens", "generate_ms"):
                counts[key] += int(_sidecar(sidecar).get(key, 0))
        table = pq.read_table(path)
        dims = [n[3:] for n in table.schema.names if n.startswith("ps_")]
        accepted = []
        for row in table.to_pylist():
            counts["attempted"] += 1
            validation = row["validation"]
            if (row["finish_reason"] or "").startswith(tuple(f"error: {e}" for e in FINAL_ERRORS)):
                counts["requests_refused"] += 1  # for good (a rerun would be refused again): attempted
            elif row["finish_reason"] is not None and row["finish_reason"].startswith("error"):
                counts["engine_errors"] += 1
                first_error = first_error or row["finish_reason"].removeprefix("error: ")
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
    # the attempts that reached parsing
    attempted_ok = counts["attempted"] - counts["engine_errors"] - counts["requests_refused"]
    return {
        "attempted": counts["attempted"],
        "parsed": counts["parsed"],
        "parseable_fraction": round(counts["parsed"] / attempted_ok, 4) if attempted_ok else None,
        "engine_errors": counts["engine_errors"],
        "requests_refused": counts["requests_refused"],
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "rejected_by_reason": dict(sorted(reasons.items())),
        "accepted_by_dimension": dict(sorted(by_dimension.items())),
        "generated_requests_total": counts["generated"],
        "cached_requests_total": counts["cached"],
        "output_tokens_total": counts["output_tokens"],
        "chunks_missing": missing,
        # chunks holding engine errors: not finished, rerunning retries their failed requests
        "chunks_incomplete": incomplete,
        "first_engine_error": first_error,
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


# Settings that only judge completions (or say how many to make): changing them re-validates cached completions
# and extends or shortens the run, but never asks for a completion made before under other values.
# Not `chunk_size`: the request cache is one file per chunk number, so another size asks for other requests in
# each chunk's file, and a new work folder is the honest outcome.
_VERDICT_ONLY = {
    "target",
    "min_score",
    "min_scores",
    "min_chars",
    "min_language_score",
    "character_checks",
    "near_dup_threshold",
}


def _grid_digest(settings: SyntheticSettings) -> str:
    import hashlib

    from synthetic.scenarios import resolve_grid_path

    return hashlib.sha256(resolve_grid_path(settings.grid).read_bytes()).hexdigest()


def _digest(data: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def synth_identity(settings: SyntheticSettings) -> str:
    """Hash of what shapes the generated completions (model, engine, grid content, sampling, seed, chunk size,
    language, turn and length bounds, grounding...), not the target, thresholds or transport.

    `corpus synth` keys its work folder, and so its request cache, by it: raising `synthetic.target` extends
    the same run (finished chunks and cached completions are reused), a new threshold or a new version of the
    checks re-judges cached completions without a request, and a new `concurrency` or endpoint is the same run.
    """
    data = settings.model_dump(mode="json", exclude=_TRANSPORT | _VERDICT_ONLY)
    if settings.engine == "openai":  # the one endpoint setting that changes what comes back
        data["structured"] = settings.openai.structured
    data["grid"] = _grid_digest(settings)
    return _digest(data)


def variant_key(
    settings: SyntheticSettings, bundle_path: str | None, groundings: Sequence[tuple[str, str]] = ()
) -> str:
    """Hash of everything that decides a chunk's content and verdicts: what shapes the completions
    (`synth_identity`), the thresholds, the classifier bundle and the version of the checks. Chunk files and
    completion markers live under `v-<key>/`, so a rerun with other settings (a refresh top-up round with a new
    seed, a rebuilt bundle, new checks) never reuses chunks made for different ones, while the request cache of
    the work folder, keyed by request content, stays shared.

    Not the target: a chunk is finished only when it holds its whole range for the current target
    (`chunk_done`), so raising the target reruns only the last chunk (from the cache) and adds new ones."""
    from classifiers.bundle import BundleError, read_manifest

    data = settings.model_dump(mode="json", include=_VERDICT_ONLY - {"target"})
    data["completions"] = synth_identity(settings)
    # contents, not paths: a bundle rebuilt in place (or built after a first run without one) must not reuse
    # chunks judged under the old one
    try:
        data["bundle"] = read_manifest(Path(bundle_path))["version"] if bundle_path else None
    except BundleError:
        data["bundle"] = f"unavailable:{bundle_path}"
    data["validation"] = VALIDATION_VERSION  # new checks re-judge finished chunks from the request cache
    # the excerpts the scenarios quote: a run that found none, then a published corpus, makes other prompts
    data["groundings"] = _digest({"ids": [doc_id for doc_id, _ in groundings]}) if groundings else None
    return _digest(data)


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


def grounding_fallback(ctx: RunContext) -> tuple[str | None, str]:
    """Where excerpts come from without `synthetic.grounding_input`: this run's dedup/curate output, else the
    published corpus (`OUT/latest`'s pretrain mixture, as `corpus synth` on a built corpus), else nowhere."""
    for previous in ("dedup", "curate"):
        output = (ctx.results.get(previous) or {}).get("output_dir")
        if output:
            return output, f"this run's {previous} output"
    published = _latest_folder(ctx.out, "pretrain")
    if published is not None:
        return str(published[0]), f"published {published[1]} pretrain"
    return None, "none"


def clear_unfinished_markers(stage: Path, settings: SyntheticSettings, chunks: int) -> list[int]:
    """Remove datatrove's completion marker of every chunk that is not finished for this target, so the
    executor runs it: a chunk with engine errors, a last chunk of a smaller target, a chunk file deleted by hand.
    Returns the chunks to run."""
    todo = []
    for chunk in range(chunks):
        if not chunk_done(stage, chunk, settings):
            todo.append(chunk)
            (stage / "logs" / "completions" / f"{chunk:05d}").unlink(missing_ok=True)
    return todo


def run_synthesize(ctx: RunContext, force: bool = False, midtrain: Path | None = None) -> dict[str, Any]:
    """Generate `synthetic.target` dialogues on the cluster and stage the accepted ones in `midtrain/`.

    Inside `corpus run` the stage is skipped when `synthetic.enabled` is false; `corpus synth` forces it and
    passes its own (empty) `midtrain` folder; the default is the version being built (`<staging>/midtrain`).
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
    root.mkdir(parents=True, exist_ok=True)
    standalone = midtrain is not None  # `corpus synth`, next to (not part of) the published versions
    midtrain = midtrain or ctx.staging / "midtrain"
    fallback, fallback_name = grounding_fallback(ctx)
    # in the work folder, not the variant's: a new threshold must re-judge the same prompts, not pick new excerpts
    groundings, grounding_source = _groundings(settings, root, fallback, fallback_name)
    stage = root / f"v-{variant_key(settings, bundle_path, groundings)}"
    stage.mkdir(parents=True, exist_ok=True)
    if settings.grounding_fraction > 0 and not groundings:
        logger.warning(
            f"synthesize: NO GROUNDING: synthetic.grounding_fraction={settings.grounding_fraction} but no "
            f"excerpts (source: {grounding_source}); every scenario is ungrounded. Set synthetic.grounding_input "
            "to scored Parquet, or synthetic.grounding_fraction=0 to silence this"
        )
    chunks = n_chunks(settings.target, settings.chunk_size)
    todo = clear_unfinished_markers(stage, settings, chunks)
    # sidecars as they were: a chunk run now counts what its earlier incomplete attempts generated too
    counts_before = {
        p.name: (p.stat().st_mtime_ns, int(_sidecar(p).get("generated", 0)))
        for p in (stage / "counts").glob("*.json")
    }
    resources = task_resources(settings, ctx.client)
    progress = {"done": chunks - len(todo), "passed": 0}

    def chunk_finished(rank: int, ok: bool) -> None:
        # the console's only sign of life during a long generation (the executor's bar is off: vLLM's
        # and the workers' lines would tear it)
        progress["done"] += 1
        found = chunk_attempts(stage, rank)
        if found is not None:
            progress["passed"] += int(_sidecar(found[1]).get("passed_checks", 0))
        state = "done" if ok and found is not None and found[2] else ("incomplete" if ok else "failed")
        logger.info(
            f"synthesize: chunk {rank} {state}; {progress['done']}/{chunks} chunks, "
            f"{progress['passed']} dialogue(s) passed checks in the chunks run now"
        )

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
        on_rank_done=chunk_finished,
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
    # `corpus synth` on a built corpus: its first scenarios are those of `corpus run`'s round 0 (same seed)
    published = _latest_folder(ctx.out, "midtrain") if standalone else None
    summary = finalize(settings, stage, midtrain, chunks, published[0] if published else None)
    generated_now = 0
    ran_now = 0
    for path in (stage / "counts").glob("*.json"):
        if counts_before.get(path.name, (None,))[0] != path.stat().st_mtime_ns:  # written by this run
            ran_now += 1
            earlier = counts_before.get("incomplete-" + path.name.split("-", 1)[1], (None, 0))[1]
            generated_now += int(_sidecar(path).get("generated", 0)) - earlier
    summary.update(
        {
            "enabled": True,
            "model": settings.model,
            "engine": settings.engine,
            "gpu": bool(resources),
            "target": settings.target,
            "chunks": chunks,
            "chunks_run": ran_now,
            "chunks_skipped": chunks - len(todo),
            "chunks_failed": {str(k): v for k, v in sorted(failed.items())},
            "generated_requests": generated_now,
            "grounding_source": grounding_source,
            "groundings": len(groundings),
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
    if summary["engine_errors"]:
        logger.warning(
            f"synthesize: {summary['engine_errors']} of {summary['attempted']} request(s) failed in the engine "
            f"(first: {summary['first_engine_error']}); chunks {summary['chunks_incomplete']} are not finished "
            "and a rerun retries them"
        )
    return summary


# -- `corpus synth` -------------------------------------------------------------------------------------------
SYNTH_DIR = "synth"  # OUT/synth/midtrain -> .generations/<run>: the dialogues of the last `corpus synth`


def synth_midtrain(out: Path) -> Path:
    """`OUT/synth/midtrain`: where `corpus synth` publishes (a symlink to the last finished generation)."""
    return Path(out) / SYNTH_DIR / "midtrain"


def new_generation(out: Path, run_id: str) -> Path:
    """An empty folder for this `corpus synth`'s accepted dialogues; hidden and not named `midtrain`, so the
    contract's glob `OUT/**/midtrain/*.parquet` never sees it before it is published (or two of them)."""
    folder = Path(out) / SYNTH_DIR / ".generations" / f"{run_id}-{time.time_ns()}"
    folder.mkdir(parents=True)
    return folder


def publish_generation(out: Path, generation: Path) -> Path:
    """Point `OUT/synth/midtrain` at `generation` with one atomic rename of a fresh symlink; remove the
    generations before the one it replaced (that one stays for readers that opened it a moment ago)."""
    from pipelines.atomic import fsync_dir

    link = synth_midtrain(out)
    if link.exists() and not link.is_symlink():
        raise RuntimeError(f"{link} is a real folder, not the link `corpus synth` keeps there: move it away")
    previous = (link.parent / os.readlink(link)).resolve() if link.is_symlink() else None
    tmp = link.with_name(f".midtrain.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(generation, link.parent), tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
    for old in generation.parent.iterdir():
        if old.resolve() not in (generation.resolve(), previous):
            shutil.rmtree(old, ignore_errors=True)
    return link


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.publish.refresh import add_arguments as add_run_arguments

    add_run_arguments(
        parser, "out=/data/x synthetic.model=org/name synthetic.target=1000 synthetic.min_score=0.6"
    )


def _finished(summary: dict[str, Any]) -> bool:
    """Every chunk ran to its end with no engine error: what `corpus synth` publishes."""
    return not (
        summary.get("chunks_failed") or summary.get("chunks_missing") or summary.get("chunks_incomplete")
    )


def main(args: argparse.Namespace) -> int:
    """Exit codes: 0 done; 1 chunks failed, missing or left incomplete by engine errors (rerun retries them;
    the summary is printed either way); 2 bad config; 75 another run holds OUT's lock (as `corpus run`)."""
    import sys

    from pipelines.cluster import connect
    from pipelines.config import ConfigError, load_config
    from pipelines.context import RunContext
    from pipelines.publish.lock import LockHeld, LockUnsupported, RunLock
    from pipelines.publish.refresh import EXIT_LOCKED, configure_stderr, expected_stage_errors
    from pipelines.publish.state import StateStore
    from pipelines.stdout import summary_stdout

    config = load_config(args.config, args.overrides)
    configure_stderr(args.log_level)
    try:
        preflight(config.synthetic)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    run_id = f"synth-{synth_identity(config.synthetic)}"
    config.out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(StateStore(config.state_dir).lock_path, "corpus synth")
        lock.acquire()
    except LockHeld as exc:  # two runs on one OUT would generate the same dialogues twice
        print(f"corpus synth: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except LockUnsupported as exc:
        print(f"corpus synth: {exc}", file=sys.stderr)
        return 1
    try:
        leftovers = sorted(config.work_dir.glob("synth-*/version/midtrain"))
        if leftovers:
            logger.warning(
                f"corpus synth: dialogues of an earlier layout in {', '.join(map(str, leftovers))}; they repeat "
                f"{synth_midtrain(config.out)}'s under OUT/**/midtrain/: delete them"
            )
        with summary_stdout() as out:
            try:
                with connect(config.cluster, shared=config.work_dir) as client:
                    ctx = RunContext(config=config, client=client, run_id=run_id)
                    generation = new_generation(config.out, run_id)
                    summary = run_synthesize(ctx, force=True, midtrain=generation)
            except (
                expected_stage_errors()
            ) as exc:  # expected failures (cluster, ranks): one line, as `corpus run`
                print(f"corpus synth: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            if _finished(summary):
                summary["midtrain_dir"] = str(publish_generation(config.out, generation))
            else:  # never replace the last finished run's dialogues with a partial (or empty) set
                shutil.rmtree(generation, ignore_errors=True)
                link = synth_midtrain(config.out)
                summary["midtrain_dir"] = str(link) if link.is_symlink() else None
                logger.warning(
                    f"corpus synth: the run is not finished: {link} still holds the last finished run's "
                    "dialogues (if any); rerunning the same command resumes"
                )
            summary["run_id"] = run_id
            print(json.dumps(summary, indent=None if args.compact else 2, default=str), file=out)
    finally:
        lock.release()
    errors, attempted = summary.get("engine_errors", 0), summary.get("attempted", 0)
    if attempted and errors == attempted:
        print(
            f"corpus synth: all {errors} request(s) failed in the engine (first: {summary.get('first_engine_error')}); "
            "nothing was generated. Rerunning the same command retries them",
            file=sys.stderr,
        )
        return 1
    if not _finished(summary):
        print(
            f"corpus synth: not finished ({len(summary.get('chunks_failed') or {})} chunk(s) failed, "
            f"{len(summary.get('chunks_missing') or [])} missing, {len(summary.get('chunks_incomplete') or [])} "
            f"with {errors} engine error(s)); rerunning the same command resumes",
            file=sys.stderr,
        )
        return 1
    return 0
