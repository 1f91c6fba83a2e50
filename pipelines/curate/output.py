"""The last two steps of a curate rank: the scored-shard writer and the rank ledger (per-shard counts).

Writer: one Parquet shard per rank in the scored-document schema (pipelines.parquet), written atomically, plus
a sidecar of 16-byte content hashes in the same row order, which the finishing pass uses for cross-rank
exact dedup without reading any text.

Ledger: after the writer has drained the pipeline it sums the rank's counters over every step and writes
`<rank>.json`: documents in, out, dropped by reason, file errors, repairs. It also checks the invariant
in == out + sum(dropped); a gap is written as `unaccounted` and logged as an error (and fails the rank in strict
mode), so a lost document can never go unnoticed.
"""

from __future__ import annotations

import time
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from pipelines.atomic import write_json_atomic
from pipelines.parquet import AtomicParquetWriter, scored_schema


def shard_name(rank: int) -> str:
    return f"{rank:05d}.parquet"


def hashes_name(rank: int) -> str:
    return f"{rank:05d}.hashes.parquet"


def counts_name(rank: int) -> str:
    return f"{rank:05d}.json"


def document_row(doc: Document, dimensions: list[str]) -> dict[str, Any]:
    """A scored-document row from a curated Document (see the schema in pipelines.parquet)."""
    meta = doc.metadata
    row: dict[str, Any] = {
        "id": doc.id,
        "text": doc.text,
        "url": meta.get("url"),
        "source": meta.get("source"),
        "source_offset": meta.get("source_offset"),
        "crawl_date": meta.get("crawl_date"),
        "language": meta.get("language"),
        "language_score": meta.get("language_score"),
        "prosocial": meta.get("prosocial"),
        "token_count": meta.get("token_count"),
        "dup_cluster_size": 1,
        "classifier_version": meta.get("classifier_version"),
    }
    for dim in dimensions:
        row[f"ps_{dim}"] = meta.get(f"ps_{dim}")
    return row


def input_order(doc: Document) -> int:
    """The document's place in the plan's input order (unit, then offset in its file), independent of how units
    were packed into ranks: cross-rank exact dedup keeps the earliest copy by it, so the same inputs keep the
    same copy whatever the number of workers."""
    offset = min(max(int(doc.metadata.get("source_offset") or 0), 0), (1 << 40) - 1)
    return (int(doc.metadata.get("unit", 0)) << 40) | offset


class ScoredShardWriter(PipelineStep):
    """Write the rank's documents to `<folder>/<rank>.parquet` and their content hashes alongside."""

    name = "💾 Scored Parquet"
    type = "💽 - WRITER"

    def __init__(self, folder: str, dimensions: list[str], row_group_rows: int = 2000):
        super().__init__()
        self.folder = folder.rstrip("/")
        self.dimensions = list(dimensions)
        self.row_group_rows = row_group_rows

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa

        schema = scored_schema(self.dimensions)
        hash_schema = pa.schema([pa.field("content_hash", pa.binary(16)), pa.field("order", pa.uint64())])
        with (
            AtomicParquetWriter(
                f"{self.folder}/{shard_name(rank)}", schema, row_group_rows=self.row_group_rows
            ) as shard,
            AtomicParquetWriter(
                f"{self.folder}/{hashes_name(rank)}", hash_schema, row_group_rows=50_000
            ) as hashes,
        ):
            for doc in data:
                with self.track_time():
                    shard.write_row(document_row(doc, self.dimensions))
                    hashes.write_row(
                        {"content_hash": doc.metadata["content_hash"], "order": input_order(doc)}
                    )
                self.stat_update("documents_out")
                self.stat_update("bytes_out", value=len(doc.text.encode("utf-8")), unit="doc")
                yield doc
            with self.track_time():
                shard.flush()
                hashes.flush()


def rank_counts(steps: list[PipelineStep]) -> dict[str, Any]:
    """Sum the accounting counters of a rank's steps (see module docstring for their meaning)."""
    counts: dict[str, Any] = {
        "documents_in": 0,
        "documents_out": 0,
        "dropped": {},
        "file_errors": {},
        "repaired": {},
        "bytes_in": 0,
        "bytes_out": 0,
        "seconds": {},
        "unreadable_inputs": [],
    }
    buckets = {"dropped_": "dropped", "file_error_": "file_errors", "repaired_": "repaired"}
    for step in steps:
        if not isinstance(step, PipelineStep):
            continue
        stats = step.stats.stats
        for key, metric in stats.items():
            for prefix, bucket in buckets.items():
                if key.startswith(prefix):
                    reason = key[len(prefix) :]
                    counts[bucket][reason] = counts[bucket].get(reason, 0) + int(metric.total)
            if key in ("documents_in", "documents_out", "bytes_in", "bytes_out"):
                counts[key] += int(metric.total)
        counts["seconds"][step.name] = round(step.stats.time_stats.total, 4)
        counts["unreadable_inputs"] += getattr(step, "unreadable", [])
    for bucket in buckets.values():
        counts[bucket] = dict(sorted(counts[bucket].items()))
    counts["unreadable_inputs"] = sorted(set(counts["unreadable_inputs"]))
    counts["unaccounted"] = counts["documents_in"] - counts["documents_out"] - sum(counts["dropped"].values())
    return counts


class RankLedger(PipelineStep):
    """Write the rank's reconciled counts to `<folder>/<rank>.json` once the pipeline has drained."""

    name = "📒 Rank ledger"
    type = "📒 - COUNTS"

    def __init__(self, folder: str, steps: list[PipelineStep], units: list[list[str]], strict: bool = False):
        super().__init__()
        self.folder = folder.rstrip("/")
        self.steps = steps
        self.units = units
        self.strict = strict

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        start = time.perf_counter()
        if data:
            for _ in data:
                pass
        counts = {"rank": rank, "units": self.units[rank], **rank_counts(self.steps)}
        counts["wall_seconds_after_drain"] = round(time.perf_counter() - start, 3)
        if counts["unaccounted"]:
            message = (
                f"rank {rank}: {counts['documents_in']} documents in != {counts['documents_out']} out + "
                f"{sum(counts['dropped'].values())} dropped ({counts['unaccounted']} unaccounted)"
            )
            logger.error(message)
            if self.strict:
                raise RuntimeError(message)
        write_json_atomic(f"{self.folder}/{counts_name(rank)}", counts, indent=1)
        return
        yield  # a generator, so datatrove can chain it
