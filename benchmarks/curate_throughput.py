"""Curate-stage throughput per worker and per stage, and peak RSS per worker on a 10x larger input.

Input: WARC.gz shards *built from the real pages in ../shared/data/web* (every HTML page of trafilatura-cache,
article-extraction-benchmark and dclm-human-quality, plus the HTML responses of the dolma and resiliparse
WARCs), repeated and perturbed (a unique "Copy N" phrase in the first paragraph, so exact dedup keeps the
copies) and wrapped in HTTP responses, one gzip member per record as Common Crawl writes them. The pages are
multilingual (German, English, French, ...), so with the default `languages: [en]` fewer documents reach the
stages after language ID, as on a real crawl.

Per stage (read, extract, language ID, quality filters, dedup+tokens, scoring, write) it reports documents and
MB entering the stage per second of worker time (each rank runs on one single-threaded worker, so this is the
rate of one worker). MB are UTF-8 bytes of the raw records for read, characters of HTML for extract and
characters of text after that.

Memory: the stage streams, so a 10x larger input must not need much more memory. Each size runs on a fresh
2-worker LocalCluster and reports each worker's peak RSS (getrusage ru_maxrss, which includes start-up and
model loading) and the peak of its extraction child processes. Target: large/small peak RSS < 1.3.

    .venv/bin/python benchmarks/curate_throughput.py [--docs 1500] [--factor 10] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WEB = REPO.parent / "shared" / "data" / "web"
TARGET_RSS_RATIO = 1.3
_FIRST_P = re.compile(rb"<p(\s[^>]*)?>", re.IGNORECASE)

# stats.json step-name fragments -> reported stage
STAGES = [
    ("read", ("READER",)),
    ("extract", ("EXTRAC",)),
    ("language ID", ("Language ID",)),
    ("filters", ("Gopher Repetition", "Gopher Quality", "C4 Quality", "FineWeb Quality")),
    ("dedup + tokens", ("DEDUP", "TOKENS")),
    ("scoring", ("SCORER",)),
    ("write", ("WRITER",)),
]


def real_pages(web: Path) -> list[bytes]:
    """Raw HTML bytes of every real page under ../shared/data/web."""
    from fastwarc import ArchiveIterator, WarcRecordType

    from pipelines.curate.http import HttpError, parse_response

    pages = [p.read_bytes() for p in sorted((web / "trafilatura-cache" / "html").glob("*.html"))]
    pages += [
        gzip.decompress(p.read_bytes())
        for p in sorted((web / "article-extraction-benchmark" / "html").glob("*.gz"))
    ]
    pages += [p.read_bytes() for p in sorted((web / "dclm-human-quality" / "html").glob("*.html"))]
    for warc in (
        "dolma-tests/sample-0000.warc.gz",
        "dolma-tests/sample-0001.warc.gz",
        "resiliparse-tests/warcfile.warc.gz",
    ):
        with open(web / warc, "rb") as f:
            for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=False):
                try:
                    response = parse_response(record.reader.read())
                except HttpError:
                    continue
                if response.status == 200 and response.content_type == "text/html":
                    pages.append(response.body)
    return pages


def _perturb(page: bytes, copy: int) -> bytes:
    tag = f"Copy {copy} of this page, built for the throughput benchmark. ".encode()
    match = _FIRST_P.search(page)
    if match:
        return page[: match.end()] + tag + page[match.end() :]
    return page.replace(b"</body>", b"<p>" + tag + b"</p></body>", 1)


def build_input(folder: Path, pages: list[bytes], docs: int, shards: int = 4) -> int:
    """Write `docs` perturbed copies of the pages as `shards` WARC.gz files; return the total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-docs // shards)
    total = 0
    for shard in range(shards):
        with open(folder / f"bench-{shard:03d}.warc.gz", "wb") as f:
            for i in range(shard * per_shard, min(docs, (shard + 1) * per_shard)):
                body = _perturb(pages[i % len(pages)], i)
                http = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                head = (
                    f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: https://bench.example/{i}\r\n"
                    f"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/http; msgtype=response\r\n"
                    f"Content-Length: {len(http)}\r\n\r\n"
                ).encode()
                member = gzip.compress(head + http + b"\r\n\r\n", compresslevel=6, mtime=0)
                f.write(member)
                total += len(member)
    return total


def _start_sampler(dask_worker: Any, interval: float = 0.05) -> bool:
    """In a worker: sample the RSS of the worker's child processes (the extraction sandboxes) in a thread."""
    import threading

    import psutil

    state = {"children_peak": 0, "stop": False}
    me = psutil.Process()

    def sample() -> None:
        while not state["stop"]:
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            state["children_peak"] = max(state["children_peak"], total)
            time.sleep(interval)

    threading.Thread(target=sample, daemon=True, name="rss-sampler").start()
    dask_worker.curate_bench_sampler = state  # functions shipped from __main__ do not share globals
    return True


def _vm_hwm() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def _worker_memory(dask_worker: Any) -> dict[str, float]:
    """In a worker: its own peak RSS (VmHWM: reset at exec, unlike ru_maxrss) and its children's sampled peak."""
    hwm = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    state = getattr(dask_worker, "curate_bench_sampler", {})
    state["stop"] = True
    return {"peak_rss_mb": hwm, "children_peak_rss_mb": state.get("children_peak", 0) / 2**20}


def run_once(input_dir: Path, out: Path, workers: int) -> dict[str, Any]:
    from pipelines.cluster import ClusterConfig, connect
    from pipelines.config import load_config
    from pipelines.context import RunContext
    from pipelines.curate.stage import preflight, run_curate

    config = load_config(None, [f"out={out}", f"input={input_dir}", f"cluster.n_workers={workers}"])
    preflight(config)
    with connect(ClusterConfig(n_workers=workers, local_directory=str(out / "dask"))) as client:
        client.run(_start_sampler)
        idle = {w: {"peak_rss_mb": m} for w, m in client.run(_vm_hwm).items()}
        ctx = RunContext(config=config, client=client, run_id="run-bench")
        start = time.perf_counter()
        summary = run_curate(ctx, config.input)
        wall = time.perf_counter() - start
        memory = client.run(_worker_memory)
    stage = ctx.work / "curate"
    steps = json.loads((stage / "stats.json").read_text())
    return {"summary": summary, "wall_s": wall, "steps": steps, "memory": memory, "idle": idle}


def _total(value: Any) -> float:
    return float(value.get("total", 0) if isinstance(value, dict) else value or 0)


def stage_table(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    by_name = {s["name"]: s for s in steps}
    for stage, fragments in STAGES:
        matched = [s for name, s in by_name.items() if any(f in name for f in fragments)]
        if not matched:
            continue
        seconds = sum(_total(s["time_stats"]) for s in matched)
        first = matched[0]["stats"]
        if stage == "read":
            docs, chars = _total(first.get("documents_in")), _total(first.get("bytes_in"))
        elif stage == "extract":
            docs, chars = _total(first.get("total")), _total(first.get("html_chars"))
        elif stage == "write":
            docs, chars = _total(first.get("documents_out")), _total(first.get("bytes_out"))
        else:
            docs = _total(first.get("total")) or _total(first.get("forwarded")) or _total(first.get("scored"))
            chars = 0.0
        rows.append({"stage": stage, "docs_in": int(docs), "chars_in": chars, "worker_s": seconds})
    # text stages: characters entering = characters leaving the previous stage (datatrove's doc_len)
    forwarded_chars = {}
    for s in steps:
        forwarded_chars[s["name"]] = _total(s["stats"].get("doc_len"))
    order = [s["name"] for s in steps]
    for row in rows:
        if row["chars_in"] or row["stage"] in ("read", "extract", "write"):
            continue
        fragments = dict(STAGES)[row["stage"]]
        first_index = min(i for i, n in enumerate(order) if any(f in n for f in fragments))
        for j in range(first_index - 1, -1, -1):
            if forwarded_chars.get(order[j]):
                row["chars_in"] = forwarded_chars[order[j]]
                break
    for row in rows:
        s = row["worker_s"] or float("nan")
        row["docs_per_s"] = round(row["docs_in"] / s, 1)
        row["mb_per_s"] = round(row["chars_in"] / 1e6 / s, 2)
        row["worker_s"] = round(row["worker_s"], 2)
    return rows


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the small and the large input in `work`, run the stage on each; return both reports."""
    pages = real_pages(WEB)
    results: dict[str, Any] = {"pages": len(pages)}
    for label, docs in (("small", args.docs), ("large", args.docs * args.factor)):
        folder = work / f"input-{label}"
        size = build_input(folder, pages, docs)
        run = run_once(folder, work / f"out-{label}", args.workers)
        results[label] = {
            "docs": docs,
            "input_mb": round(size / 1e6, 1),
            "wall_s": round(run["wall_s"], 1),
            "docs_per_s_cluster": round(docs / run["wall_s"], 1),
            "documents_out": run["summary"]["documents_out"],
            "unaccounted": run["summary"]["unaccounted"],
            "stages": stage_table(run["steps"]),
            "peak_rss_mb": sorted(round(m["peak_rss_mb"]) for m in run["memory"].values()),
            "children_peak_rss_mb": sorted(round(m["children_peak_rss_mb"]) for m in run["memory"].values()),
            "idle_rss_mb": sorted(round(m["peak_rss_mb"]) for m in run["idle"].values()),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1500, help="documents in the smaller input")
    parser.add_argument("--factor", type=int, default=10, help="size of the larger input, in multiples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not WEB.is_dir():
        print(f"skipped: {WEB} not found")
        return 0
    from datatrove.utils.logging import logger

    logger.remove()  # the per-rank stats tables would bury the report
    work = args.workdir or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    try:
        results = measure(work, args)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    small, large = results["small"], results["large"]
    ratio = round(max(large["peak_rss_mb"]) / max(small["peak_rss_mb"]), 3)
    report = {
        "load_average_1min_at_end": round(__import__("os").getloadavg()[0], 1),
        "cpus": __import__("os").cpu_count(),
        "input": f"WARC.gz built from {results.pop('pages')} real pages of {WEB} (repeated and perturbed)",
        "workers": args.workers,
        **results,
        "peak_rss_ratio_large_vs_small": ratio,
        "rss_target_met": ratio < TARGET_RSS_RATIO,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"input: {report['input']}; {args.workers} workers (LocalCluster, 1 thread each)")
    print(
        f"machine: {report['cpus']} CPUs, 1-min load average {report['load_average_1min_at_end']} at the end "
        "(rates are per second of worker wall time: a loaded machine lowers them)"
    )
    for label in ("small", "large"):
        r = results[label]
        print(
            f"\n[{label}] {r['docs']} docs, {r['input_mb']} MB WARC.gz -> {r['documents_out']} kept; wall {r['wall_s']} s "
            f"({r['docs_per_s_cluster']} docs/s for the cluster); unaccounted {r['unaccounted']}"
        )
        print(f"  {'stage':<15} {'docs in':>8} {'worker s':>9} {'docs/s/worker':>14} {'MB/s/worker':>12}")
        for row in r["stages"]:
            print(
                f"  {row['stage']:<15} {row['docs_in']:>8} {row['worker_s']:>9} {row['docs_per_s']:>14} {row['mb_per_s']:>12}"
            )
        print(
            f"  peak RSS per worker: {r['peak_rss_mb']} MB (before the run {r['idle_rss_mb']} MB); "
            f"extraction children, sampled peak {r['children_peak_rss_mb']} MB"
        )
    verdict = "meets" if report["rss_target_met"] else "MISSES"
    print(f"\npeak RSS large/small = {ratio} ({verdict} the < {TARGET_RSS_RATIO} target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
