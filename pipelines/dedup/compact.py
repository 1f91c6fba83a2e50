"""Compaction of a MinHash index folder: one file per LSH bucket instead of one per refresh.

Why: each refresh adds one index file per bucket (the state store links the previous generation's files and
adds the batch's), and datatrove's bucket step opens every file of its bucket at once. After a year of nightly
refreshes that is about 365 open files per bucket task and about 5,000 files per index. When a bucket holds
more than `max_files` files, they are merged into one. The merge streams over the files' sorted records
(datatrove's index format: fixed-size little-endian tuples of `hashes_per_bucket` hashes, in ascending order)
and keeps each distinct record once: an index record only says "a document with this band exists". Memory is
one read buffer per file (4 MB with the default 8 64-bit hashes per bucket). It runs in a generation's temp
folder before the store commits it, so a crash leaves only garbage that the store sweeps.
"""

from __future__ import annotations

import heapq
import json
import struct
from collections.abc import Iterator
from pathlib import Path

from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.logging import logger

from pipelines.atomic import atomic_path
from pipelines.dedup.settings import DedupConfig
from pipelines.dedup.stage import INDEX_CONFIG, INDEX_SUFFIX, DedupError, _index_identity, minhash_config
from pipelines.publish.faults import fault_point

RECORDS_PER_READ = 1 << 16


def index_record(index_dir: str | Path) -> str:
    """The record layout of an index folder (a struct format without the byte order, which is little-endian),
    from the settings its `index_config.json` records."""
    config_file = Path(index_dir) / INDEX_CONFIG
    try:
        identity = json.loads(config_file.read_text())
        fields = DedupConfig.model_fields
        cfg = DedupConfig(**{k: v for k, v in identity.items() if k in fields})
    except (OSError, ValueError) as exc:
        raise DedupError(f"{config_file}: cannot read the index settings ({exc})") from None
    if _index_identity(cfg) != identity:  # settings this code would not write: do not guess the layout
        raise DedupError(f"{config_file}: index settings this version does not know: {identity}")
    mh = minhash_config(cfg)
    return f"{mh.hashes_per_bucket}{mh.hash_config.struct_format}"


def _records(path: Path, layout: str) -> Iterator[tuple[int, ...]]:
    size, record = path.stat().st_size, struct.calcsize(f"<{layout}")
    if size % record:
        raise DedupError(
            f"{path}: {size} bytes is not a whole number of {record}-byte index records (truncated?)"
        )
    with open(path, "rb") as f:
        yield from read_tuples_from_file(f, layout, lines_to_buffer=RECORDS_PER_READ)


def merge_index_files(files: list[Path], target: Path, layout: str) -> int:
    """Write the sorted union of `files` to `target` (atomically); return the records written."""
    record = struct.Struct(f"<{layout}")
    written, last = 0, None
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        buffer = bytearray()
        for values in heapq.merge(*(_records(path, layout) for path in files)):
            if values == last:
                continue
            if last is not None and values < last:
                raise DedupError(
                    f"index files under {target.parent} are not sorted; rebuild with `corpus run`"
                )
            buffer += record.pack(*values)
            last, written = values, written + 1
            if len(buffer) >= record.size * RECORDS_PER_READ:
                out.write(buffer)
                buffer.clear()
        out.write(buffer)
    return written


def compact_index(index_dir: str | Path, max_files: int, name: str) -> int:
    """Merge the files of every bucket of `index_dir` that holds more than `max_files`; return buckets merged.

    The merged file is `<name>--compacted.minhash.index`; the files it replaces are removed (in the state
    store they are hard links, so older generations keep theirs).
    """
    index_dir = Path(index_dir)
    buckets = sorted(p for p in index_dir.glob("bucket_*") if p.is_dir())
    crowded = {}
    for bucket in buckets:
        files = sorted(
            p for p in bucket.iterdir() if p.name.endswith(INDEX_SUFFIX) and not p.name.startswith(".")
        )
        if len(files) > max_files:
            crowded[bucket] = files
    if not crowded:
        return 0
    layout = index_record(index_dir)
    for bucket, files in crowded.items():
        target = bucket / f"{name}--compacted{INDEX_SUFFIX}"
        merge_index_files(files, target, layout)
        fault_point("commit_during_index_merge")
        for path in files:
            if path != target:
                path.unlink()
    files_before = sum(len(files) for files in crowded.values())
    logger.info(
        f"MinHash index {name}: merged {files_before} files of {len(crowded)} bucket(s) into one per bucket"
    )
    return len(crowded)
