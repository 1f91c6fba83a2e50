"""The mix stage at scale: Dask DataFrame (out of core) vs a plain pandas in-memory implementation, in one run.

Generates a scored table (2,000,000 rows by default, random word-salad texts of 20-60 words, Beta(2,2) scores,
in `--files` Parquet files), then builds the mixture of one profile twice (default `civic`, whose factors are
solved for a 30% top-tier token share, so fractional copies are exercised):

* **dask**: `pipelines.mix.stage.mix_scored` on a LocalCluster whose workers have `--memory-limit` each. A
  thread samples every worker's RSS; the run passes when no worker exceeded the limit or was restarted.
* **pandas**: the same maths (`pipelines.mix.copies`) on one in-memory DataFrame in a subprocess: read all,
  explode, sort by shard and position, write the same shards. Its peak RSS is the subprocess's ru_maxrss.

Prints rows/s and peak RSS for both, checks that both wrote byte-identical shards, and reports how far the
realised tier token shares are from the solved targets.

    .venv/bin/python benchmarks/mix_scale.py [--rows 2000000] [--memory-limit 2GB] [--skip-pandas]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _generate_file(folder: str, index: int, rows: int, start: int) -> int:
    from pipelines.mix.sample_data import make_scored_table
    from pipelines.parquet import write_table_atomic

    table = make_scored_table(rows, seed=index, start=start, min_words=20, max_words=60)
    write_table_atomic(table, f"{folder}/{index:05d}.parquet", row_group_rows=50_000)
    return rows


def generate(client, folder: Path, rows: int, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    starts = [sum(per[:i]) for i in range(files)]
    futures = client.map(_generate_file, [str(folder)] * files, range(files), per, starts, pure=False)
    assert sum(client.gather(futures)) == rows


class RssSampler(threading.Thread):
    """Peak RSS of each worker process, sampled every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.interval = interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for addr, proc in self.procs.items():
                with contextlib.suppress(Exception):  # a worker that died is reported by the pid check
                    self.peak[addr] = max(self.peak[addr], proc.memory_info().rss)
            time.sleep(self.interval)


def parse_bytes(text: str) -> int:
    from dask.utils import parse_bytes as dask_parse

    return int(dask_parse(text))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


# -- the pandas baseline (runs in a subprocess so that its peak RSS is its own) -----------------------------
def pandas_baseline(input_dir: Path, out_dir: Path, profile_name: str, shard_mb: float) -> dict:
    import pyarrow.parquet as pq

    from pipelines.mix.copies import explode, partition_stats
    from pipelines.mix.settings import MixConfig
    from pipelines.mix.stage import (
        input_schema,
        list_inputs,
        load_profiles,
        plan_profile,
        uncompressed_bytes,
        write_shard,
    )

    start = time.perf_counter()
    cfg = MixConfig(shard_mb=shard_mb)
    files = list_inputs(input_dir)
    profiles = load_profiles([profile_name])
    schema = input_schema(files, profiles)
    df = pq.read_table(input_dir).to_pandas()
    stats = partition_stats(df, profiles, cfg.seed)[profiles[0].name]
    bytes_per_token = uncompressed_bytes(files) / stats["tokens"].sum()
    plan, _ = plan_profile(profiles[0], stats, cfg, bytes_per_token)
    exploded = explode(df, plan)
    del df
    exploded = exploded.sort_values(["_shard", "_pos", "id", "repeat_index"], kind="stable")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in plan.profile.tiers]
    bounds = exploded["_shard"].searchsorted(range(plan.shards + 1))
    for shard in range(plan.shards):
        part = exploded.iloc[bounds[shard] : bounds[shard + 1]]
        write_shard(part, shard, plan.shards, str(out_dir), schema, cfg.row_group_rows, names)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rows_out": len(exploded),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB", help="per-worker memory limit of the LocalCluster")
    parser.add_argument("--shard-mb", type=float, default=128.0)
    parser.add_argument(
        "--profile", default="civic", help="civic solves its factors for a 30%% top-tier share"
    )
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--scratch", default=None, help="folder for inputs and outputs (default: a temp folder)"
    )
    parser.add_argument("--pandas-baseline", nargs=2, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.pandas_baseline:
        result = pandas_baseline(
            Path(args.pandas_baseline[0]), Path(args.pandas_baseline[1]), args.profile, args.shard_mb
        )
        print("RESULT " + json.dumps(result))
        return 0

    from pipelines.cluster import ClusterConfig, connect
    from pipelines.mix.settings import MixConfig
    from pipelines.mix.stage import mix_scored

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="mix-bench-"))
    inputs, dask_out, pandas_out = scratch / "scored", scratch / "dask", scratch / "pandas"
    for folder in (inputs, dask_out, pandas_out):
        shutil.rmtree(folder, ignore_errors=True)
    limit = parse_bytes(args.memory_limit)
    cluster = ClusterConfig(
        n_workers=args.workers, memory_limit=args.memory_limit, local_directory=str(scratch / "dask-scratch")
    )
    with connect(cluster) as client:
        t = time.perf_counter()
        generate(client, inputs, args.rows, args.files)
        mb = sum(p.stat().st_size for p in inputs.glob("*.parquet")) / 1e6
        print(
            f"input: {args.rows:,} scored rows in {args.files} files ({mb:.0f} MB zstd; generated word-salad "
            f"texts of 20-60 words) in {time.perf_counter() - t:.1f}s"
        )
        client.run(lambda: __import__("gc").collect())
        pids = client.run(os.getpid)
        sampler = RssSampler(pids)
        base_rss = {a: __import__("psutil").Process(p).memory_info().rss for a, p in pids.items()}
        sampler.start()
        t = time.perf_counter()
        mix_scored(inputs, dask_out, [args.profile], MixConfig(shard_mb=args.shard_mb), client)
        dask_seconds = time.perf_counter() - t
        sampler.stop.set()
        sampler.join()
        restarted = client.run(os.getpid) != pids
    peak = max(sampler.peak.values())
    mixture = json.loads((dask_out / "mixture.json").read_text())["profiles"][args.profile]
    rows_out = mixture["totals"]["rows"]
    errors = [
        abs(t["share"] - t["target_share"]) / t["target_share"] for t in mixture["tiers"] if t["target_share"]
    ]
    print(
        f"mixture ({args.profile}): {rows_out:,} rows, {mixture['totals']['mixture_tokens']:,} tokens, "
        f"{mixture['shards']} shards of ~{args.shard_mb:g} MB; factors "
        f"{[round(t['factor'], 3) for t in mixture['tiers']]}; max copies {max(t['max_copies'] for t in mixture['tiers'])}"
    )
    print(f"tier token shares vs solved targets: max relative error {max(errors):.5%}")
    print(
        f"dask   : {dask_seconds:7.1f}s  {args.rows / dask_seconds:9,.0f} rows/s  peak worker RSS "
        f"{peak / 1e9:.2f} GB (idle {max(base_rss.values()) / 1e9:.2f} GB) vs limit {limit / 1e9:.2f} GB per worker, "
        f"workers restarted: {restarted}"
    )
    ok = peak < limit and not restarted
    if not args.skip_pandas:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--profile",
                args.profile,
                "--shard-mb",
                str(args.shard_mb),
                "--pandas-baseline",
                str(inputs),
                str(pandas_out),
            ],
            capture_output=True,
            text=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"pandas : failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        else:
            res = json.loads(line[0][7:])
            print(
                f"pandas : {res['seconds']:7.1f}s  {args.rows / res['seconds']:9,.0f} rows/s  peak RSS "
                f"{res['peak_rss'] / 1e9:.2f} GB (one process, whole table in memory)"
            )
            same = digest(dask_out / "pretrain") == digest(pandas_out)
            print(
                f"ratio dask/pandas: throughput {res['seconds'] / dask_seconds:.2f}x, "
                f"peak memory per process {peak / res['peak_rss']:.2f}x; byte-identical shards: {same}"
            )
            ok = ok and same
    print(f"memory limit respected: {'PASS' if peak < limit and not restarted else 'FAIL'}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
