"""Cross-rank exact dedup (curate's finalize pass): driver peak memory and time, against an Arrow baseline.

The pass runs on the driver over every document's 16-byte content hash, so its memory grows with the crawl.
This compares, each in a fresh process on the same hash sidecars:
- baseline: all hashes in one Arrow table, group-by hash for the earliest input position, join back (what
  finalize did before);
- finalize: `pipelines.curate.finalize.cross_rank_duplicates`, one pass (sort of two uint64 halves);
- finalize with `--rows-per-pass` (default: a quarter of the documents), as a crawl above ROWS_PER_PASS runs.
All three must find the same duplicates. Prints peak RSS above the process's baseline, seconds, and the ratios.

    .venv/bin/python benchmarks/finalize_memory.py [--docs 8000000] [--ranks 8] [--dup 0.1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.curate.finalize import cross_rank_duplicates  # noqa: E402
from pipelines.curate.output import hashes_name  # noqa: E402


def make_sidecars(folder: Path, docs: int, ranks: int, dup: float) -> None:
    rng = np.random.default_rng(0)
    per_rank = docs // ranks
    earlier = rng.integers(0, 2**63, size=(per_rank, 2), dtype=np.int64)
    for rank in range(ranks):
        words = rng.integers(0, 2**63, size=(per_rank, 2), dtype=np.int64)
        copies = rng.random(per_rank) < dup  # a share of each rank repeats hashes of rank 0 (or itself)
        words[copies] = earlier[rng.integers(0, per_rank, size=int(copies.sum()))]
        if rank == 0:
            earlier = words.copy()
        array = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(16), per_rank, [None, pa.py_buffer(words.tobytes())]
        )
        # input order: the ranks' documents interleave, as when units are packed by size
        order = np.arange(per_rank, dtype=np.uint64) * np.uint64(ranks) + np.uint64(rank)
        pq.write_table(pa.table({"content_hash": array, "order": order}), folder / hashes_name(rank))


def arrow_baseline(folder: Path, ranks: int) -> dict[int, pa.Array]:
    tables = []
    for rank in range(ranks):
        sidecar = pq.read_table(folder / hashes_name(rank))
        pos = pa.array(np.arange(sidecar.num_rows, dtype=np.int64) + (rank << 32))
        tables.append(
            pa.table({"h": sidecar["content_hash"].cast(pa.binary()), "order": sidecar["order"], "pos": pos})
        )
    table = pa.concat_tables(tables)
    first = table.group_by("h").aggregate([("order", "min")])
    joined = table.join(first, "h")
    dup = np.sort(joined.filter(pc.not_equal(joined["order"], joined["order_min"]))["pos"].to_numpy())
    return {int(r): pa.array(dup[(dup >> 32) == r] & 0xFFFFFFFF) for r in np.unique(dup >> 32)}


def measure(folder: Path, ranks: int, method: str, rows_per_pass: int) -> dict:
    """Run one method in this (fresh) process; peak RSS is reported above the process's starting peak."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if method == "baseline":
        found = arrow_baseline(folder, ranks)
    else:
        found = cross_rank_duplicates(folder, ranks, rows_per_pass)
    seconds = time.perf_counter() - started
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    digest = hashlib.sha256()
    for rank in sorted(found):
        digest.update(f"{rank}:".encode() + np.asarray(found[rank].to_numpy(), dtype=np.int64).tobytes())
    return {"seconds": seconds, "peak_mb": peak_mb, "duplicates": sum(len(v) for v in found.values()),
            "digest": digest.hexdigest()[:16]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=8_000_000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--dup", type=float, default=0.1)
    parser.add_argument("--rows-per-pass", type=int, default=0, help="default: a quarter of --docs")
    parser.add_argument(
        "--child", nargs=3, metavar=("FOLDER", "METHOD", "ROWS_PER_PASS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        folder, method, rows = args.child
        print(json.dumps(measure(Path(folder), args.ranks, method, int(rows))))
        return
    rows_per_pass = args.rows_per_pass or max(1, args.docs // 4)
    with tempfile.TemporaryDirectory(prefix="finalize-bench-") as tmp:
        folder = Path(tmp)
        make_sidecars(folder, args.docs, args.ranks, args.dup)
        results = {}
        for label, method, rows in (
            ("arrow group-by (baseline)", "baseline", 0),
            ("finalize, one pass", "finalize", 10**12),
            (f"finalize, {rows_per_pass:,} rows per pass", "finalize", rows_per_pass),
        ):
            command = [
                sys.executable,
                __file__,
                "--ranks",
                str(args.ranks),
                "--child",
                str(folder),
                method,
                str(rows),
            ]
            results[label] = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout
            )
    base = results["arrow group-by (baseline)"]
    print(f"{args.docs:,} hashes over {args.ranks} ranks, {args.dup:.0%} copies")
    for label, r in results.items():
        print(
            f"  {label:40s} {r['seconds']:6.1f} s  peak {r['peak_mb']:7.0f} MB "
            f"({r['peak_mb'] / args.docs * 2**20:5.0f} B/doc)  duplicates {r['duplicates']:,}  "
            f"memory ratio {r['peak_mb'] / base['peak_mb']:.2f}  time ratio {r['seconds'] / base['seconds']:.2f}"
        )
    same = len({r["digest"] for r in results.values()}) == 1
    print("same duplicates in all three:", "yes" if same else "NO")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
