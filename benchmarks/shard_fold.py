"""Folding the refresh state's kept-shard batches: speed and peak memory, against a read-all-write-once baseline.

After `publish.shard_batches_max` nightly refreshes the commit folds every kept-shard batch into one batch of
large files (`pipelines/publish/shard_compaction.fold_batches`). It runs on the driver, at the end of a run, over
the whole corpus, so it must not need the corpus in memory and should cost no more than re-encoding it once.
This compares, each in a fresh process on the same generated batches (scored-document schema, zstd):
- baseline: `pyarrow.parquet.read_table` of every file, then one `write_table` (the least work that decodes and
  re-encodes everything, holding it all in memory);
- fold: `fold_batches`, one row group at a time.
Both must hold the same rows in the same order. Prints MB/s of compressed input, peak RSS (and the process's RSS before
the work: the imports), and the ratios.

    .venv/bin/python benchmarks/shard_fold.py [--batches 33] [--files 3] [--rows 4000] [--text-bytes 3000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.parquet import parquet_paths, scored_schema, write_table_atomic  # noqa: E402
from pipelines.publish.shard_compaction import fold_batches  # noqa: E402

DIMENSIONS = ("care", "constructiveness", "respect", "virtue")


def make_batches(root: Path, batches: int, files: int, rows: int, text_bytes: int) -> list[Path]:
    """Batch folders like the state's: a few files each, texts drawn from a Zipf vocabulary (compress like prose)."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    prose = " ".join(vocab[np.minimum(rng.zipf(1.3, size=4_000_000), len(vocab)) - 1])
    schema = scored_schema(DIMENSIONS)
    folders = []
    for batch in range(batches):
        folder = root / f"batch-{batch:04d}"
        folder.mkdir()
        for part in range(files):
            starts = rng.integers(0, len(prose) - text_bytes, rows)
            texts = [prose[start : start + text_bytes] for start in starts]
            ids = [hashlib.sha256(f"{batch}/{part}/{i}".encode()).hexdigest()[:32] for i in range(rows)]
            columns = {
                "id": ids,
                "text": texts,
                "url": [f"https://example.org/{i}" for i in ids],
                "source": [f"s3://crawl/batch-{batch}.warc.gz"] * rows,
                "source_offset": np.arange(rows, dtype=np.int64) * 4096,
                "crawl_date": ["2026-11-27T00:00:00Z"] * rows,
                "language": ["en"] * rows,
                "language_score": rng.random(rows, dtype=np.float32),
                **{f"ps_{dim}": rng.random(rows, dtype=np.float32) for dim in DIMENSIONS},
                "prosocial": rng.random(rows, dtype=np.float32),
                "token_count": rng.integers(50, 2000, rows, dtype=np.int32),
                "dup_cluster_size": np.ones(rows, dtype=np.int32),
                "classifier_version": ["17f4e5e9eb99528e"] * rows,
            }
            table = pa.table(columns).cast(schema)
            write_table_atomic(table, folder / f"{part:05d}.parquet", row_group_rows=2000)
        folders.append(folder)
    return folders


def digest(paths: list[str]) -> str:
    """Hash of the ids and texts in file order: the same rows in the same order give the same digest.

    Hashes each column's value bytes and lengths, not its buffers: offsets depend on how rows are chunked."""
    hashes = {(column, part): hashlib.sha256() for column in ("id", "text") for part in ("lengths", "bytes")}
    for path in paths:
        table = pq.read_table(path, columns=["id", "text"])
        for column in ("id", "text"):
            for chunk in table[column].chunks:
                offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
                offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
                hashes[column, "lengths"].update(np.diff(offsets).tobytes())
                hashes[column, "bytes"].update(memoryview(chunk.buffers()[2])[offsets[0] : offsets[-1]])
    return "".join(h.hexdigest()[:4] for h in hashes.values())


def _rss_mb(field: str) -> float:
    """From /proc/self/status: unlike getrusage's ru_maxrss, VmHWM is not inherited across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(root: Path, method: str, file_mb: int) -> dict:
    """Run one method in this (fresh) process, reporting its peak RSS and the RSS before the work began."""
    sources = sorted(p for p in root.iterdir() if p.name.startswith("batch-"))
    target = root / f"out-{method}"
    before = _rss_mb("VmHWM")
    started = time.perf_counter()
    if method == "baseline":
        files = [path for source in sources for path in parquet_paths(source)]
        table = pa.concat_tables(pq.read_table(path) for path in files)
        target.mkdir()
        pq.write_table(table, target / "00000.parquet", compression="zstd", compression_level=3)
        del table
    else:
        fold_batches(sources, target, file_mb << 20)
    seconds = time.perf_counter() - started
    peak_mb = _rss_mb("VmHWM")
    written = parquet_paths(target)
    return {"seconds": seconds, "start_mb": before, "peak_mb": peak_mb, "files": len(written),
            "digest": digest(written)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=33, help="one more than shard_batches_max's default")
    parser.add_argument("--files", type=int, default=3, help="files per batch")
    parser.add_argument("--rows", type=int, default=4000, help="rows per file")
    parser.add_argument("--text-bytes", type=int, default=3000, help="about this many bytes of text per row")
    parser.add_argument("--file-mb", type=int, default=256, help="publish.shard_file_mb")
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "METHOD", "FILE_MB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, method, file_mb = args.child
        print(json.dumps(measure(Path(root), method, int(file_mb))))
        return
    with tempfile.TemporaryDirectory(prefix="fold-bench-") as tmp:
        root = Path(tmp)
        sources = make_batches(root, args.batches, args.files, args.rows, args.text_bytes)
        inputs = [path for source in sources for path in parquet_paths(source)]
        input_mb = sum(Path(path).stat().st_size for path in inputs) / 2**20
        expected = digest(inputs)
        results = {}
        for label, method in (("read all, write once (baseline)", "baseline"), ("fold_batches", "fold")):
            command = [sys.executable, __file__, "--child", str(root), method, str(args.file_mb)]
            results[label] = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout
            )
    base = results["read all, write once (baseline)"]
    rows = args.batches * args.files * args.rows
    print(f"{args.batches} batches x {args.files} files, {rows:,} rows, {input_mb:.0f} MB of zstd Parquet")
    for label, r in results.items():
        print(
            f"  {label:34s} {r['seconds']:6.1f} s  {input_mb / r['seconds']:6.1f} MB/s  "
            f"peak RSS {r['peak_mb']:6.0f} MB ({r['start_mb']:.0f} at start)  files {r['files']}  "
            f"speed ratio {base['seconds'] / r['seconds']:.2f}  memory ratio {r['peak_mb'] / base['peak_mb']:.2f}"
        )
    same = all(r["digest"] == expected for r in results.values())
    print("same rows in the same order:", "yes" if same else "NO")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
