"""DaskPipelineExecutor vs datatrove's LocalPipelineExecutor on the same pipeline, in one run.

Pipeline: JSONL reader -> RegexFilter -> LambdaFilter -> Parquet writer over generated
documents (200k by default, 16 files), with 2 workers on both sides. Prints both throughputs and the ratio
Dask/Local (target >= 0.95). The LocalCluster is started before the clock starts: it is a once-per-run cost,
reported separately. Each side runs `--repeats` times, alternating, and the best time counts, because these
machines are small and noisy.

    .venv/bin/python benchmarks/executor_overhead.py [--docs 200000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = [
    "kindness",
    "respect",
    "people",
    "community",
    "help",
    "listen",
    "understand",
    "support",
    "reason",
    "evidence",
    "fair",
    "honest",
    "neighbour",
    "garden",
    "library",
    "volunteer",
    "school",
    "river",
    "city",
    "council",
    "meeting",
    "question",
    "answer",
    "together",
    "patience",
]


def make_inputs(folder: Path, docs: int, files: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = docs // files
    for i in range(files):
        with open(folder / f"part-{i:03d}.jsonl", "w") as f:
            for j in range(per_file):
                lines = [
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                    for _ in range(rng.randint(3, 8))
                ]
                f.write(json.dumps({"id": f"{i}-{j}", "text": "\n".join(lines)}) + "\n")


def pipeline(inp: Path, out: Path):
    from datatrove.pipeline.filters import LambdaFilter, RegexFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    return [
        JsonlReader(str(inp)),
        RegexFilter(r"\b(?:lorem|ipsum)\b"),
        LambdaFilter(lambda doc: len(doc.text.split()) >= 40),
        ParquetWriter(str(out)),
    ]


def run_local(inp: Path, work: Path, tasks: int) -> float:
    from datatrove.executor import LocalPipelineExecutor

    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline(inp, work / "out"), tasks=tasks, workers=2, logging_dir=str(work / "logs")
    ).run()
    return time.perf_counter() - start


def run_dask(inp: Path, work: Path, tasks: int, client) -> float:
    from pipelines.executor import DaskPipelineExecutor

    start = time.perf_counter()
    DaskPipelineExecutor(
        pipeline(inp, work / "out"),
        tasks=tasks,
        logging_dir=str(work / "logs"),
        client=client,
        progress=False,
    ).run()
    return time.perf_counter() - start


def count_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from datatrove.utils.logging import logger

    logger.remove()  # keep the output to the figures
    from pipelines.cluster import ClusterConfig, connect

    root = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    try:
        make_inputs(root / "in", args.docs, args.files)
        docs = (args.docs // args.files) * args.files
        t0 = time.perf_counter()
        with connect(ClusterConfig(n_workers=2, local_directory=str(root / "dask"))) as client:
            cluster_start = time.perf_counter() - t0
            local_times, dask_times = [], []
            for repeat in range(args.repeats):
                local_times.append(run_local(root / "in", root / f"local-{repeat}", args.files))
                dask_times.append(run_dask(root / "in", root / f"dask-{repeat}", args.files, client))
            rows_local = count_rows(root / "local-0" / "out")
            rows_dask = count_rows(root / "dask-0" / "out")
        assert rows_local == rows_dask, f"outputs differ: local {rows_local} rows, dask {rows_dask} rows"
        local_rate, dask_rate = docs / min(local_times), docs / min(dask_times)
        print(f"documents: {docs} generated in {args.files} JSONL files; {rows_dask} pass the filters")
        print(f"LocalPipelineExecutor (2 workers): {local_rate:,.0f} docs/s  (best of {local_times})")
        print(f"DaskPipelineExecutor  (2 workers): {dask_rate:,.0f} docs/s  (best of {dask_times})")
        print(f"LocalCluster start (not timed above): {cluster_start:.1f}s")
        print(f"ratio dask/local: {dask_rate / local_rate:.3f}  (target >= 0.95)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
