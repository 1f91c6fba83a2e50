"""Finish the curate stage after every rank is done: cross-rank exact dedup, final shards, per-shard counts.

Why a driver-side pass: a rank only knows its own content hashes. The pass reads the small hash sidecars
(a 16-byte hash and an 8-byte input position per document, no text; in several passes above ROWS_PER_PASS
documents, so driver memory stays bounded), keeps the copy of each hash that comes first in the input order
(not in rank order, which depends on the number of workers), and moves each rank's shard to `output/` —
untouched when it lost nothing, rewritten without the other copies otherwise.

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

from pipelines.atomic import atomic_path, fsync_dir, write_json_atomic
from pipelines.curate.output import counts_name, hashes_name, shard_name
from pipelines.parquet import AtomicParquetWriter, write_table_atomic

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


# Hashes grouped in one pass: about 70 bytes each at the peak (two uint64 halves, input order, positions, the
# sort order and its gathers), so a pass stays under about 1.5 GB of driver memory however large the crawl.
# The Arrow group-by + join this replaced took 230-340 bytes per hash, in one pass over everything
# (benchmarks/finalize_memory.py measures both).
ROWS_PER_PASS = 20_000_000


def cross_rank_duplicates(
    ranks_dir: Path, world_size: int, rows_per_pass: int = ROWS_PER_PASS
) -> dict[int, pa.Array]:
    """For each rank, the row indices whose content hash also occurs earlier in the input order.

    Above `rows_per_pass` documents the hashes are grouped in several passes, each over the hashes whose
    first 8 bytes fall in its residue class: equal hashes always meet in the same pass, and the driver holds
    one pass at a time (each pass re-reads the sidecars, 24 bytes per document).
    """
    paths = {r: ranks_dir / hashes_name(r) for r in range(world_size)}
    rows = {r: pq.ParquetFile(p).metadata.num_rows for r, p in paths.items() if p.exists()}
    passes = max(1, -(-sum(rows.values()) // rows_per_pass))
    found: dict[int, list[np.ndarray]] = {}
    for part in range(passes):
        halves, positions, orders = [], [], []
        for rank, n in rows.items():
            if not n:
                continue
            table = pq.read_table(paths[rank])
            words = _hash_words(table.column("content_hash"))
            pos = np.arange(n, dtype=np.int64) + (rank << 32)
            # input order (see output.input_order); sidecars of runs started before it existed: rank order
            order = (
                table.column("order").to_numpy() if "order" in table.column_names else pos.astype(np.uint64)
            )
            if passes > 1:
                keep = words[:, 0] % np.uint64(passes) == part
                words, pos, order = words[keep], pos[keep], order[keep]
            halves.append(words)
            positions.append(pos)
            orders.append(order)
        if not positions:
            continue
        words, pos, order = np.concatenate(halves), np.concatenate(positions), np.concatenate(orders)
        del halves, positions, orders
        # sort by hash, then input order: each run of equal hashes starts with its earliest copy in the inputs
        # (whichever rank read it); the rest of the run are the copies to drop
        sort = np.lexsort((order, words[:, 1], words[:, 0]))
        del order
        hi, lo = words[sort, 0], words[sort, 1]
        del words
        later = np.zeros(len(sort), dtype=bool)
        later[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
        dup = np.sort(pos[sort[later]])
        if not len(dup):
            continue
        ranks, starts = np.unique(dup >> 32, return_index=True)
        for rank, rows_of_rank in zip(ranks.tolist(), np.split(dup & 0xFFFFFFFF, starts[1:]), strict=True):
            found.setdefault(rank, []).append(rows_of_rank)
    return {rank: pa.array(np.sort(np.concatenate(parts)), pa.int64()) for rank, parts in found.items()}


def _hash_words(column: pa.ChunkedArray) -> np.ndarray:
    """The 16-byte hashes as an (n, 2) uint64 array, without a Python object per hash."""
    hashes = column.combine_chunks()
    data = np.frombuffer(hashes.buffers()[1], dtype=np.uint8)
    data = data[hashes.offset * 16 : (hashes.offset + len(hashes)) * 16]
    return data.view(np.uint64).reshape(-1, 2)


def _write_excluded(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as temp, gzip.open(temp, "wt", encoding="utf-8") as f:
        for row in table.to_pylist():
            row["filter_reason"] = "exact_duplicate"
            f.write(json.dumps(row, default=str) + "\n")


def _rewrite_without(source: Path, target: Path, duplicate_rows: pa.Array) -> pa.Table:
    """Write `source` minus `duplicate_rows` to `target` one row group at a time; return the removed rows.

    Why row group by row group: each kept group keeps the layout the rank's writer gave it (`row_group_rows`
    rows, or fewer under its byte cap), so a rewritten shard reads like an untouched one, and the driver holds
    one row group, not a whole shard. No target is written when nothing is kept.
    """
    with pq.ParquetFile(source) as parquet:
        meta, schema = parquet.metadata, parquet.schema_arrow
        group_rows = max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)), default=1)
        removed: list[pa.Table] = []
        first = 0
        writer = None
        try:
            for group in range(meta.num_row_groups):
                table = parquet.read_row_group(group)
                rows = pa.array(range(first, first + table.num_rows), pa.int64())
                first += table.num_rows
                mask = pc.invert(pc.is_in(rows, value_set=duplicate_rows))
                removed.append(table.filter(pc.invert(mask)))
                table = table.filter(mask)
                if not table.num_rows:
                    continue
                if writer is None:
                    writer = AtomicParquetWriter(target, schema, row_group_rows=max(group_rows, 1))
                writer.write_table(table)  # one row group: never more rows than the writer's row_group_rows
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    if writer is not None:
        writer.close()
    return pa.concat_tables(removed) if removed else schema.empty_table()


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
            dropped = _rewrite_without(source, target, duplicate_rows)
            if exclusions:
                _write_excluded(stage / "excluded" / "exact_dedup_cross" / f"{rank:05d}.jsonl.gz", dropped)
            os.remove(source)
        elif rows:
            os.replace(source, target)
            fsync_dir(output_dir)  # the move must be on disk before counts/<rank>.json says the shard is done
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
