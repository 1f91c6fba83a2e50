"""datatrove steps around the stock MinHash stages: who survives a cluster, its size, and the Parquet output.

datatrove's `MinhashDedupCluster` keeps the root of each union-find set, which union-by-size makes an
arbitrary member. We want the *most prosocial* copy to survive (ties: the smallest id), so:

* `PrioritySignature` is the stock signature step that also writes, per rank, a small sidecar with each
  document's `prosocial`, `id` and `dup_cluster_size`, indexed like datatrove's `doc_idx`;
* `PriorityCluster` is the stock cluster step with the survivor chosen from that sidecar. It writes the same
  `.remove` / `.sizes` files, so datatrove's `MinhashDedupFilter` applies them unchanged.

Buckets and filter are datatrove's own steps. `ScoredParquetWriter` writes the filter output with the exact
input schema (datatrove's writers infer types from Python values and would turn float32 into double).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    SENTINEL,
    MinhashConfig,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.logging import logger
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

from pipelines.parquet import AtomicParquetWriter

PRIORITY_DIR = "priority"
INDEX_NODE = (SENTINEL, SENTINEL)  # how datatrove's bucket step names "a signature from the index"


class SplitTokenizer(WordTokenizer):
    """Split on whitespace. MinHash shingles are built from `simplify_text` output (lower case, no
    punctuation, one space), so a plain split is what spaCy would return there, without needing spaCy."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for line in text.splitlines(keepends=True):
            if line.strip():
                spans.append((start, start + len(line)))
            start += len(line)
        return spans


def word_tokenizer(name: str) -> WordTokenizer:
    """'whitespace' -> SplitTokenizer; anything else is a datatrove language code."""
    return SplitTokenizer() if name == "whitespace" else load_word_tokenizer(name)


class PrioritySignature(MinhashDedupSignature):
    """datatrove's MinHash signature step plus a per-rank sidecar of survivor priorities."""

    name = "🎯 MinHash signatures (+ priority)"

    def __init__(self, output_folder: DataFolderLike, config: MinhashConfig, tokenizer: str = "whitespace"):
        super().__init__(output_folder, config=config, language=word_tokenizer(tokenizer))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        prosocial: list[float] = []
        ids: list[str] = []
        sizes: list[int] = []

        def record(docs: DocumentsPipeline) -> DocumentsPipeline:
            for doc in docs:
                meta = doc.metadata
                score = meta.get("prosocial")
                prosocial.append(float("nan") if score is None else float(score))
                ids.append(str(doc.id))
                sizes.append(int(meta.get("dup_cluster_size") or 1))
                yield doc

        super().run(record(data), rank, world_size)
        table = pa.table(
            {
                "prosocial": pa.array(prosocial, pa.float32()),
                "id": pa.array(ids, pa.string()),
                "dup_cluster_size": pa.array(sizes, pa.int32()),
            }
        )
        with self.output_folder.open(f"{PRIORITY_DIR}/{rank:05d}.parquet", "wb") as f:
            pq.write_table(table, f)


def _survivor_key(priority: tuple[float, str, int]) -> tuple[float, str]:
    """Sort key: highest prosocial first, then the smallest id; a missing (NaN) score ranks last."""
    score, doc_id, _ = priority
    return (math.inf if math.isnan(score) else -score, doc_id)


class PriorityCluster(MinhashDedupCluster):
    """Union the duplicate pairs, then keep the highest-`prosocial` member of each cluster (ties: smallest id).

    A cluster that contains a signature from the index (an already published document) keeps none of the new
    documents. Writes `<file>.remove` and `<file>.sizes` for every file with a clustered document (possibly
    empty), because datatrove's filter ignores `.sizes` of files that have no `.remove`. The size recorded
    for a survivor is the sum of its members' `dup_cluster_size` (1 each as curate writes them: the exact copies
    curate dropped are counted in its stats, not in this column).
    """

    name = "🎯 MinHash clusters (keep most prosocial)"

    def __init__(
        self,
        input_folder: DataFolderLike,
        output_folder: DataFolderLike,
        signatures_folder: DataFolderLike,
        config: MinhashConfig,
    ):
        super().__init__(input_folder, output_folder, config=config, save_cluster_size=True)
        self.signatures_folder = get_datafolder(signatures_folder)

    def _priorities(self, files: dict[int, list[int]]) -> dict[tuple[int, int], tuple[float, str, int]]:
        out: dict[tuple[int, int], tuple[float, str, int]] = {}
        for file_id, docs in files.items():
            path = f"{PRIORITY_DIR}/{file_id:05d}.parquet"
            with self.signatures_folder.open(path, "rb") as f:
                table = pq.read_table(f)
            index = np.asarray(docs, dtype=np.int64)
            if len(index) and index.max() >= table.num_rows:
                raise ValueError(
                    f"{self.signatures_folder.path}/{path}: has {table.num_rows} rows but the duplicate pairs "
                    f"name document {index.max()}; rerun the dedup stage from its signatures"
                )
            sub = table.take(pa.array(index))
            for doc, score, doc_id, size in zip(
                docs,
                sub["prosocial"].to_pylist(),
                sub["id"].to_pylist(),
                sub["dup_cluster_size"].to_pylist(),
                strict=True,
            ):
                out[(file_id, doc)] = (score, doc_id, size)
        return out

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if world_size != 1:
            raise ValueError("PriorityCluster runs as a single task (world_size=1)")
        # listed, not globbed: datatrove's glob reads a folder named "out[v2]" as a pattern and finds nothing
        dup_files = [f for f in self.input_folder.list_files(recursive=False) if f.endswith(".dups")]
        if len(dup_files) % self.config.num_buckets:
            raise ValueError(
                f"{self.input_folder.path}: {len(dup_files)} .dups files is not a multiple of "
                f"{self.config.num_buckets} buckets; the bucket step did not finish"
            )
        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def find(x: tuple[int, int]) -> tuple[int, int]:
            root = x
            while parent.setdefault(root, root) != root:
                root = parent[root]
            while parent[x] != root:  # path compression, iteratively (clusters can be long chains)
                parent[x], x = root, parent[x]
            return root

        with self.track_time():
            for dup_file in dup_files:
                with self.input_folder.open(dup_file, "rb") as f:
                    for f1, d1, f2, d2 in read_tuples_from_file(
                        f, "4I", lines_to_buffer=self.lines_to_buffer
                    ):
                        ra, rb = find((f1, d1)), find((f2, d2))
                        if ra != rb:
                            if rb == INDEX_NODE:
                                ra, rb = rb, ra
                            parent[rb] = ra  # the index node, when present, stays the root
            members: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
            by_file: dict[int, list[int]] = defaultdict(list)
            for node in sorted(parent):
                if node == INDEX_NODE:
                    continue
                members[find(node)].append(node)
                by_file[node[0]].append(node[1])
            priority = self._priorities(by_file)

            remove: dict[int, list[int]] = {file_id: [] for file_id in by_file}
            sizes: dict[int, list[tuple[int, int]]] = {file_id: [] for file_id in by_file}
            for root, nodes in members.items():
                if root == INDEX_NODE:
                    keep = None
                    self.stat_update("index_matches", value=len(nodes))
                else:
                    keep = min(nodes, key=lambda n: _survivor_key(priority[n]))
                    sizes[keep[0]].append((keep[1], sum(priority[n][2] for n in nodes)))
                    self.stat_update("clusters")
                    self.stat_update("cluster_size", value=len(nodes), unit="cluster")
                for node in nodes:
                    if node != keep:
                        remove[node[0]].append(node[1])
                        self.stat_update("to_remove")

            for file_id in sorted(by_file):
                with self.output_folder.open(f"{file_id:06d}.remove", "wb") as f:
                    for doc in sorted(remove[file_id]):
                        f.write(struct.pack("<I", doc))
                with self.output_folder.open(f"{file_id:06d}.sizes", "wb") as f:
                    for doc, size in sorted(sizes[file_id]):
                        f.write(struct.pack("<2I", doc, size))
        logger.info(f"{len(members)} clusters over {len(parent)} documents")


class RecordClusterSize(PipelineStep):
    """Move datatrove's `minhash_cluster_size` into our `dup_cluster_size` column (survivors of a cluster only;
    other documents keep the size they came with)."""

    type = "🫂 - DEDUP"
    name = "📏 dup_cluster_size"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            size = doc.metadata.pop("minhash_cluster_size", 1)
            if size > 1:
                doc.metadata["dup_cluster_size"] = size
                self.stat_update("cluster_survivors")
            yield doc


class ScoredParquetWriter(PipelineStep):
    """Write documents back to Parquet with a fixed Arrow schema, one file per rank, atomically.

    Columns are taken from `doc.text`, `doc.id` and `doc.metadata` by schema name, so the output has exactly
    the input's columns and types (the shared `AtomicParquetWriter` renames the file into place only when
    complete, so readers that glob `*.parquet` never see a partial file).
    """

    type = "💽 - WRITER"
    name = "🗄 scored Parquet"

    def __init__(self, output_folder: str, schema: pa.Schema):
        super().__init__()
        self.output_folder = str(output_folder).rstrip("/")
        self.schema = schema

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        names = self.schema.names
        with AtomicParquetWriter(f"{self.output_folder}/{rank:05d}.parquet", self.schema) as writer:
            for doc in data:
                with self.track_time():
                    meta = doc.metadata
                    writer.write_row(
                        {
                            key: doc.text if key == "text" else doc.id if key == "id" else meta.get(key)
                            for key in names
                        }
                    )
                    self.stat_update("written")
                yield doc
