"""The dedup stage: datatrove's MinHash stages on the scored corpus, through the Dask executor.

Five datatrove pipelines, chained with `depends=` so that a rerun resumes at the first incomplete rank:

1. signatures (one rank per group of scored files) - `PrioritySignature`, also records survivor priorities;
2. buckets (one rank per LSH band) - datatrove's `MinhashDedupBuckets`, optionally against a published index;
3. clusters (one rank) - `PriorityCluster`, keeps the most prosocial document of each cluster;
4. filter (same ranks as 1) - datatrove's `MinhashDedupFilter`, then the Parquet writer;
5. index (one rank per band) - datatrove's `MinhashBuildIndex` over this run's signatures.

The index of step 5 is *staged* under the stage folder. It becomes the published corpus's index only when
`commit_index` copies it to `OUT/state/minhash/<generation>/` after the version is published, so that a run that
fails before publishing never makes a refresh drop documents that were never published.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.dedup.minhash import (
    MinhashBuildIndex,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupFilter,
)
from datatrove.pipeline.readers import ParquetReader
from datatrove.utils.logging import logger

from pipelines.atomic import copy_atomic, write_json_atomic, write_text_atomic
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.steps import PriorityCluster, PrioritySignature, RecordClusterSize, ScoredParquetWriter
from pipelines.executor import DaskPipelineExecutor
from pipelines.parquet import parquet_paths

if TYPE_CHECKING:
    from pipelines.context import RunContext

REQUIRED_COLUMNS = ("id", "text", "prosocial")
INDEX_CONFIG = "index_config.json"
INDEX_SUFFIX = ".minhash.index"  # datatrove's index file names end so


class DedupError(ValueError):
    """Inputs or an index the dedup stage cannot use; the message names the path and what was expected."""


def minhash_config(cfg: DedupConfig) -> MinhashConfig:
    return MinhashConfig(
        n_grams=cfg.n_grams,
        num_buckets=cfg.num_buckets,
        hashes_per_bucket=cfg.hashes_per_bucket,
        seed=cfg.seed,
    )


def _index_identity(cfg: DedupConfig) -> dict[str, Any]:
    """Everything that must match for signatures of two runs to be comparable."""
    mh = minhash_config(cfg)
    return {
        "n_grams": cfg.n_grams,
        "num_buckets": cfg.num_buckets,
        "hashes_per_bucket": cfg.hashes_per_bucket,
        "seed": cfg.seed,
        "tokenizer": cfg.tokenizer,
        "hash": str(mh.hash_config),
        "norm": repr(mh.norm_config),
    }


def list_parquet(folder: str | Path) -> list[Path]:
    """Complete Parquet files of a folder (`pipelines.parquet.list_parquet`); a missing folder is an error here."""
    if not Path(folder).is_dir():
        raise DedupError(f"{folder}: scored Parquet folder not found")
    return parquet_paths(folder)


def scored_schema(files: list[Path]) -> pa.Schema:
    """The unified schema of the scored files, checked for the columns dedup needs."""
    schemas = []
    for path in files:
        try:
            schema = pq.read_schema(path)
        except Exception as exc:
            raise DedupError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise DedupError(f"{path}: missing column(s) {missing}; expected the scored-document schema")
        schemas.append(schema)
    try:
        return pa.unify_schemas(schemas)
    except pa.ArrowInvalid as exc:
        raise DedupError(f"{files[0].parent}: scored files disagree on column types ({exc})") from None


def _rows(files: list[Path]) -> int:
    return sum(pq.read_metadata(p).num_rows for p in files)


def _stat(stats: Any, key: str) -> int:
    """Sum a counter over the steps of a merged PipelineStats."""
    total = 0
    for step in getattr(stats, "stats", []):
        value = step.stats.get(key) if hasattr(step, "stats") else None
        if value is not None:
            # stats read back from JSON: a counter updated more than once is {"total": .., "mean": ..}
            value = value.get("total", 0) if isinstance(value, dict) else getattr(value, "total", value)
            total += int(value)
    return total


def minhash_pipelines(
    input_dir: str | Path, work: Path, cfg: DedupConfig, schema: pa.Schema, index_dir: Path | None = None
) -> list[tuple[str, list, int]]:
    """The four MinHash pipelines as (name, fresh steps, ranks), in run order; any datatrove executor can run
    them one after the other (the benchmark runs them under LocalPipelineExecutor too).

    Signatures and filter read the same files with the same number of ranks, so datatrove's per-rank
    document indices line up. Output: kept documents in `work/output/`, one Parquet file per rank.
    """
    mh = minhash_config(cfg)
    files = list_parquet(input_dir)
    tasks = max(1, min(cfg.tasks or len(files), len(files)))
    # the readers take this listing, not a glob: datatrove would read a folder named "out[v2]" as a pattern
    # (and find nothing), and both readers must see the same files for their document indices to line up
    paths_file = write_text_atomic(work / "input_files.txt", "".join(f"{p.name}\n" for p in files))

    def reader() -> ParquetReader:
        r = ParquetReader(
            str(input_dir), paths_file=paths_file, recursive=False, text_key="text", id_key="id"
        )
        r.add_file_path = False  # keep only the scored columns in metadata
        return r

    sigs, buckets, remove = str(work / "signatures"), str(work / "buckets"), str(work / "remove")
    return [
        ("signatures", [reader(), PrioritySignature(sigs, config=mh, tokenizer=cfg.tokenizer)], tasks),
        (
            "buckets",
            [
                MinhashDedupBuckets(
                    sigs,
                    buckets,
                    config=mh,
                    only_dedup_in_index=False,
                    index_folder=str(index_dir) if index_dir else None,
                )
            ],
            cfg.num_buckets * cfg.workers_per_bucket,
        ),
        ("clusters", [PriorityCluster(buckets, remove, sigs, config=mh)], 1),
        (
            "filter",
            [
                reader(),
                MinhashDedupFilter(remove, load_cluster_sizes=True),
                RecordClusterSize(),
                ScoredParquetWriter(str(work / "output"), schema),
            ],
            tasks,
        ),
    ]


def dedup_scored(
    ctx: RunContext, input_dir: str | Path, stage: str = "dedup", index_dir: str | Path | None = None
) -> dict[str, Any]:
    """Near-duplicate removal of one folder of scored Parquet, optionally also against a published index.

    Returns counts plus `output_dir` (the kept documents, same schema as the input, `dup_cluster_size` set) and
    `index_dir` (this input's staged MinHash index, to `commit_index` after publishing).
    """
    cfg = ctx.config.dedup
    files = list_parquet(input_dir)
    work = ctx.stage_dir(stage)
    output_dir = work / "output"
    staged_index = work / "index"
    if not files:
        logger.warning(f"{stage}: no scored Parquet in {input_dir}; nothing to deduplicate")
        output_dir.mkdir(parents=True, exist_ok=True)
        return {
            "output_dir": str(output_dir),
            "index_dir": None,
            "documents_in": 0,
            "documents_out": 0,
            "removed": 0,
            "clusters": 0,
            "index_matches": 0,
        }
    schema = scored_schema(files)
    mh = minhash_config(cfg)
    if index_dir is not None:
        index_dir = Path(index_dir)
        _check_index(index_dir, cfg)
        if not any(index_dir.glob(f"bucket_*/*{INDEX_SUFFIX}")):
            index_dir = None

    stages = minhash_pipelines(input_dir, work, cfg, schema, index_dir=index_dir)
    executors: dict[str, DaskPipelineExecutor] = {}
    previous = None
    for name, pipeline, ranks in stages:
        previous = executors[name] = DaskPipelineExecutor(
            pipeline,
            tasks=ranks,
            logging_dir=str(work / "logs" / name),
            depends=previous,
            name=f"{stage}-{name}",
            client=ctx.client,
            progress=False,
        )
    clusters, filtering = executors["clusters"], executors["filter"]
    index_name = f"{stage}-{_fingerprint(files)}"
    indexing = DaskPipelineExecutor(
        [MinhashBuildIndex(str(work / "signatures"), str(staged_index), index_name=index_name, config=mh)],
        tasks=cfg.num_buckets,
        logging_dir=str(work / "logs" / "index"),
        depends=executors["signatures"],
        name=f"{stage}-index",
        client=ctx.client,
        progress=False,
    )
    filtering.run()
    indexing.run()
    _write_json(staged_index / INDEX_CONFIG, _index_identity(cfg))
    cluster_stats = clusters.merge_stats()
    documents_in, documents_out = _rows(files), _rows(list_parquet(output_dir))
    result = {
        "output_dir": str(output_dir),
        "index_dir": str(staged_index),
        "documents_in": documents_in,
        "documents_out": documents_out,
        "removed": documents_in - documents_out,
        "clusters": _stat(cluster_stats, "clusters"),
        "index_matches": _stat(cluster_stats, "index_matches"),
    }
    logger.info(f"{stage}: kept {documents_out}/{documents_in} documents ({result['clusters']} clusters)")
    return result


def run_dedup(ctx: RunContext) -> dict[str, Any]:
    """Dedup the curate stage's scored output (`ctx.results['curate']['output_dir']`) within itself."""
    input_dir = ctx.results["curate"]["output_dir"]
    if not ctx.config.dedup.enabled:
        return {"enabled": False, "output_dir": str(input_dir), "index_dir": None}
    return {"enabled": True, **dedup_scored(ctx, input_dir, stage="dedup")}


def dedup_against_index(
    ctx: RunContext,
    new_scored_dir: str | Path,
    index_dir: str | Path | None = None,
    stage: str = "dedup_refresh",
) -> dict[str, Any]:
    """For refresh: dedup new scored documents among themselves *and* against the published corpus's index.

    A new document that is a near-duplicate of a published one is removed (the published copy stays, even
    when the new one scores higher: published versions are immutable). `index_dir` is the state store's
    current index generation (`StateStore.index_dir`); None, a missing or an empty index mean "nothing
    published yet". The state store commits the returned `index_dir` after the new version is published.
    """
    if not ctx.config.dedup.enabled:
        return {"enabled": False, "output_dir": str(new_scored_dir), "index_dir": None}
    return {"enabled": True, **dedup_scored(ctx, new_scored_dir, stage=stage, index_dir=index_dir)}


def commit_index(staged_index_dir: str | Path | None, index_dir: str | Path) -> int:
    """Add a staged index (from `dedup_scored`) to the published index folder; return files added.

    Idempotent (a file already present with the same size is skipped) and crash-safe: each file is hard-linked
    (copied across devices) to a temp name in the target folder and renamed. Call it after `latest` points at
    the version built from it.
    """
    if staged_index_dir is None:
        return 0
    staged, target = Path(staged_index_dir), Path(index_dir)
    if not staged.is_dir():
        raise DedupError(f"{staged}: staged MinHash index not found")
    identity = json.loads((staged / INDEX_CONFIG).read_text())
    existing = target / INDEX_CONFIG
    if existing.is_file() and json.loads(existing.read_text()) != identity:
        raise DedupError(
            f"{existing}: published index was built with different MinHash settings than {staged}; "
            f"refusing to mix them (rebuild the index or restore the dedup settings)"
        )
    if not existing.is_file():  # first: index files never sit in a folder that does not say their settings
        _write_json(existing, identity)
    added = 0
    for src in sorted(staged.glob(f"bucket_*/*{INDEX_SUFFIX}")):
        dst = target / src.relative_to(staged)
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            continue
        copy_atomic(src, dst, link=True)  # the work folder's copy is never written again
        added += 1
    return added


def _check_index(index_dir: Path, cfg: DedupConfig) -> None:
    config_file = index_dir / INDEX_CONFIG
    if not config_file.is_file():
        return
    try:
        recorded = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DedupError(
            f"{config_file}: unreadable ({exc}); the MinHash index cannot be trusted: run `corpus run` to rebuild it"
        ) from None
    if recorded != _index_identity(cfg):
        raise DedupError(
            f"{config_file}: the published MinHash index was built with other dedup settings "
            f"({config_file.read_text().strip()}); set the dedup section back or rebuild the index"
        )


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:12]


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, indent=2, sort_keys=True)
