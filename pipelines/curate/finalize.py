"""Finish the curate stage after every rank is done: cross-rank exact dedup, final shards, per-shard counts.

Why a driver-side pass: a rank only knows its own content hashes. The pass reads the small hash sidecars
(16 bytes per document, no text), keeps the first copy of each hash in (rank, row) order, and moves each
rank's shard to `output/` — untouched when it lost nothing, rewritten without the later copies otherwise.

It is idempotent: `counts/<rank>.json` is written last for each shard and marks it finished, and the choice of
which copy survives depends only on the hash sidecars, so a crash at any point is repaired by rerunning.

Outputs (all under the stage folder `work/<run_id>/curate/`):
- `output/<rank>.parquet`: the curated shards (scored-document schema); ranks that kept nothing have none.
- `counts/<rank>.json`: per-shard counts, reconciled (documents_in == documents_out + sum(dropped)).
- `counts.parquet`: the same in long form, one row per (shard, metric, reason), for the stats tables.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.atomic import atomic_path, write_json_atomic
from pipelines.curate.output import counts_name, hashes_name, shard_name
from pipelines.parquet import write_table_atomic

COUNTS_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.int32()),
        pa.field(
            "metric", pa.string()
        ),  # documents_in | documents_out | dropped | file_error | repaired | bytes_in
        pa.field("reason", pa.string()),  # the reason for dropped/file_error/repaired, else null
        pa.field("count", pa.int64()),
    ]
)


def cross_rank_duplicates(ranks_dir: Path, world_size: int) -> dict[int, pa.Array]:
    """For each rank, the row indices whose content hash already occurs in an earlier (rank, row)."""
    tables = []
    for rank in range(world_size):
        path = ranks_dir / hashes_name(rank)
        if not path.exists():
            continue
        hashes = pq.read_table(path).column("content_hash")
        n = len(hashes)
        if n:
            pos = pa.array(np.arange(n, dtype=np.int64) + (rank << 32))
            tables.append(pa.table({"h": hashes.cast(pa.binary()), "pos": pos}))
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    first = table.group_by("h").aggregate([("pos", "min")])
    joined = table.join(first, "h")
    dup = joined.filter(pc.not_equal(joined["pos"], joined["pos_min"]))
    out: dict[int, list[int]] = {}
    for pos in dup["pos"].to_pylist():
        out.setdefault(pos >> 32, []).append(pos & 0xFFFFFFFF)
    return {rank: pa.array(sorted(rows), pa.int64()) for rank, rows in out.items()}


def _write_excluded(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as temp, gzip.open(temp, "wt", encoding="utf-8") as f:
        for row in table.to_pylist():
            row["filter_reason"] = "exact_duplicate"
            f.write(json.dumps(row, default=str) + "\n")


def finalize_rank(
    stage: Path, rank: int, duplicate_rows: pa.Array | None, exclusions: bool
) -> dict[str, Any]:
    """Move or rewrite one rank's shard into output/ and write its final counts; returns the counts."""
    ranks_dir, output_dir, counts_dir = stage / "ranks", stage / "output", stage / "counts"
    final_counts = counts_dir / counts_name(rank)
    if final_counts.exists():
        return json.loads(final_counts.read_text())
    counts = json.loads((ranks_dir / counts_name(rank)).read_text())
    removed = 0 if duplicate_rows is None else len(duplicate_rows)
    source, target = ranks_dir / shard_name(rank), output_dir / shard_name(rank)
    if source.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        rows = pq.ParquetFile(source).metadata.num_rows
        if removed:
            table = pq.read_table(source)
            mask = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=duplicate_rows))
            if exclusions:
                dropped = table.filter(pc.invert(mask))
                _write_excluded(stage / "excluded" / "exact_dedup_cross" / f"{rank:05d}.jsonl.gz", dropped)
            table = table.filter(mask)
            if table.num_rows:
                write_table_atomic(table, target, row_group_rows=max(table.num_rows, 1))
            os.remove(source)
        elif rows:
            os.replace(source, target)
        else:
            os.remove(source)  # an empty shard is not published
    if removed:
        counts["dropped"]["exact_duplicate"] = counts["dropped"].get("exact_duplicate", 0) + removed
    counts["dropped"] = dict(sorted(counts["dropped"].items()))
    counts["documents_out"] -= removed
    counts["cross_rank_duplicates"] = removed
    counts["shard"] = f"output/{shard_name(rank)}" if target.exists() else None
    counts["unaccounted"] = counts["documents_in"] - counts["documents_out"] - sum(counts["dropped"].values())
    write_json_atomic(final_counts, counts, indent=1)
    return counts


def counts_table(all_counts: list[dict[str, Any]]) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for c in all_counts:
        shard = c["rank"]
        for metric in ("documents_in", "documents_out", "bytes_in"):
            rows.append({"shard": shard, "metric": metric, "reason": None, "count": c.get(metric, 0)})
        for metric, bucket in (
            ("dropped", "dropped"),
            ("file_error", "file_errors"),
            ("repaired", "repaired"),
        ):
            for reason, n in c.get(bucket, {}).items():
                rows.append({"shard": shard, "metric": metric, "reason": reason, "count": n})
    return pa.Table.from_pylist(rows, schema=COUNTS_SCHEMA)


def finalize(
    stage: Path, world_size: int, exact_dedup: bool = True, exclusions: bool = False
) -> list[dict[str, Any]]:
    """Run the finishing pass over all ranks; return the per-shard counts (also written to disk)."""
    stage = Path(stage)
    pending = [r for r in range(world_size) if not (stage / "counts" / counts_name(r)).exists()]
    duplicates = cross_rank_duplicates(stage / "ranks", world_size) if (exact_dedup and pending) else {}
    all_counts = [finalize_rank(stage, rank, duplicates.get(rank), exclusions) for rank in range(world_size)]
    write_table_atomic(counts_table(all_counts), stage / "counts.parquet")
    return all_counts
