"""MinHash dedup: DaskPipelineExecutor vs datatrove's LocalPipelineExecutor on the same stages, in one run.

Stages: signatures (+ survivor priorities) -> buckets -> clusters (keep the most prosocial) -> filter + Parquet
writer, exactly the pipelines of the dedup stage (`pipelines.dedup.stage.minhash_pipelines`), with the same
ranks and 2 workers on both sides. Prints docs/s for both and the ratio Dask/Local (target >= 0.95), and checks
that both executors keep exactly the same documents.

Input: scored Parquet built for the benchmark. Texts are assembled from sentences of the real pages in
`../shared/data/web/dclm-human-quality` (random sentences per document, so pages are distinct), and a share of
documents are near-duplicates (a copy of an earlier document with a few words edited). Without the shared data,
random word salad is used instead; the output says which. The LocalCluster starts before the clock: it is a
once-per-run cost, reported separately. Each side runs `--repeats` times, alternating, and the best time counts.

    .venv/bin/python benchmarks/dedup_throughput.py [--docs 20000] [--files 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data" / "web" / "dclm-human-quality" / "majority_data.jsonl"


def sentences() -> tuple[list[str], str]:
    if SHARED.is_file():
        pool = []
        for line in SHARED.read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            pool += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.split()) >= 6]
        return pool, f"sentences of {SHARED.relative_to(REPO.parent)} ({len(pool)} sentences), recombined"
    from pipelines.mix.sample_data import random_texts

    return random_texts(20000, np.random.default_rng(0), 8, 20), "random word salad (shared data not found)"


def make_inputs(folder: Path, docs: int, files: int, dup_share: float, seed: int = 0) -> str:
    from pipelines.mix.sample_data import make_scored_table, write_scored

    rng = np.random.default_rng(seed)
    pool, origin = sentences()
    texts: list[str] = []
    for _ in range(docs):
        if texts and rng.random() < dup_share:
            words = texts[int(rng.integers(len(texts)))].split()
            for pos in rng.choice(len(words), size=min(3, len(words)), replace=False):
                words[pos] = f"edit{rng.integers(10**6)}"
            texts.append(" ".join(words))
        else:
            picks = rng.integers(0, len(pool), size=int(rng.integers(8, 25)))
            texts.append(" ".join(pool[i] for i in picks))
    write_scored(folder, make_scored_table(docs, seed=seed, texts=texts), files=files)
    return origin


def run_stages(kind: str, input_dir: Path, work: Path, workers: int, client=None) -> float:
    from datatrove.executor import LocalPipelineExecutor

    from pipelines.dedup.settings import DedupConfig
    from pipelines.dedup.stage import list_parquet, minhash_pipelines, scored_schema
    from pipelines.executor import DaskPipelineExecutor

    cfg = DedupConfig()
    schema = scored_schema(list_parquet(input_dir))
    start = time.perf_counter()
    for name, pipeline, ranks in minhash_pipelines(input_dir, work, cfg, schema):
        logs = str(work / "logs" / name)
        if kind == "dask":
            executor = DaskPipelineExecutor(
                pipeline, tasks=ranks, logging_dir=logs, client=client, progress=False, name=name
            )
        else:
            executor = LocalPipelineExecutor(
                pipeline, tasks=ranks, workers=min(workers, ranks), logging_dir=logs
            )
        executor.run()
    return time.perf_counter() - start


def kept_ids(folder: Path) -> set[str]:
    return set(pq.read_table(folder, columns=["id"])["id"].to_pylist())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--files", type=int, default=8, help="scored Parquet files = signature/filter ranks")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dup-share", type=float, default=0.1, help="share of near-duplicate documents")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scratch", default=None, help="folder for inputs and work (default: a temp folder)")
    args = parser.parse_args()

    from pipelines.cluster import ClusterConfig, connect

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="dedup-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    inputs = scratch / "scored"
    shutil.rmtree(inputs, ignore_errors=True)
    t = time.perf_counter()
    origin = make_inputs(inputs, args.docs, args.files, args.dup_share)
    mb = sum(p.stat().st_size for p in inputs.glob("*.parquet")) / 1e6
    print(
        f"input: {args.docs} docs in {args.files} files ({mb:.1f} MB zstd), texts: {origin}; "
        f"{args.dup_share:.0%} planted near-duplicates; built in {time.perf_counter() - t:.1f}s"
    )

    t = time.perf_counter()
    with connect(ClusterConfig(n_workers=args.workers, local_directory=str(scratch / "dask"))) as client:
        print(
            f"LocalCluster with {args.workers} workers started in {time.perf_counter() - t:.1f}s (not timed)"
        )
        times: dict[str, list[float]] = {"local": [], "dask": []}
        outputs = {}
        for repeat in range(args.repeats):
            for kind in ("local", "dask"):
                work = scratch / f"{kind}-{repeat}"
                shutil.rmtree(work, ignore_errors=True)
                seconds = run_stages(kind, inputs, work, args.workers, client)
                times[kind].append(seconds)
                outputs[kind] = kept_ids(work / "output")
                print(f"  {kind:5s} run {repeat + 1}: {seconds:6.2f}s  {args.docs / seconds:8.0f} docs/s")
    same = outputs["local"] == outputs["dask"]
    best = {k: min(v) for k, v in times.items()}
    ratio = best["local"] / best["dask"]
    print(
        f"kept documents: local {len(outputs['local'])}, dask {len(outputs['dask'])}, identical sets: {same}"
    )
    print(f"LocalPipelineExecutor : {args.docs / best['local']:8.0f} docs/s (best of {args.repeats})")
    print(f"DaskPipelineExecutor  : {args.docs / best['dask']:8.0f} docs/s (best of {args.repeats})")
    print(f"ratio Dask/Local      : {ratio:.3f}  (target >= 0.95) -> {'PASS' if ratio >= 0.95 else 'FAIL'}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
