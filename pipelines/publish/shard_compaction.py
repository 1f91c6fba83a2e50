"""Fold the refresh state's kept-shard batches into one batch of large files.

Each refresh adds a batch folder `state/shards/<batch>/` holding its kept documents, often a few small files.
Every refresh re-mixes all of them, so after a year of nightly runs the mix would read hundreds of folders and
thousands of small files (one Dask partition, task and footer read each). When the state names more than
`publish.shard_batches_max` batches, the commit folds them into one new batch of files of about
`publish.shard_file_mb` each.

Why this is safe to do at any time: the mix lays out copies from each document's id (hash, position, shard),
not from the file it came in, so the same documents in other files give byte-identical mixtures (a test checks
it). Why all batches and not only the small ones: each refresh re-mixes, and so rewrites, the whole corpus
anyway; folding it once every `shard_batches_max` refreshes adds a small fraction of that.

The new batch is written under a temp name and renamed into place, then `state.json` names it instead of the
folded ones, which the sweep removes; a crash at any point leaves a committed state (see
`state.fold_if_needed`, which decides when and which batches to fold).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from datatrove.utils.logging import logger

from pipelines.atomic import commit_dir
from pipelines.parquet import AtomicParquetWriter, parquet_paths
from pipelines.publish.faults import fault_point


def fold_batches(sources: list[Path], target: Path, file_bytes: int) -> int | None:
    """Write every document of `sources` (in order) into new files in `target`; return the files written.

    Row groups are kept whole (decoded and re-encoded), and a file is closed once it holds `file_bytes` of
    uncompressed data.
    Returns None, writing nothing, when the batches' schemas differ (a batch from an older version of the
    code): folding them would need a cast the mix already does on read, so they are left as they are.
    """
    files = [path for source in sources for path in parquet_paths(source)]
    if not files:
        return None
    schema = pq.read_schema(files[0])
    for path in files[1:]:
        if not pq.read_schema(path).remove_metadata().equals(schema.remove_metadata()):
            logger.warning(f"state: {path} has another schema than {files[0]}; kept shard batches not folded")
            return None
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    written, size, writer = 0, 0, None
    try:
        for path in files:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.metadata.num_row_groups):
                if writer is None:  # each write_table below is one row group: the source's, as it was
                    writer = AtomicParquetWriter(
                        tmp / f"{written:05d}.parquet", schema, row_group_rows=1 << 30
                    )
                    written += 1
                writer.write_table(parquet.read_row_group(group))
                size += parquet.metadata.row_group(group).total_byte_size
                if size >= file_bytes:
                    writer.close()
                    writer, size = None, 0
            fault_point("commit_during_shard_fold")
        if writer is not None:
            writer.close()
        commit_dir(tmp, target)
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
