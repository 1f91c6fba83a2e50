"""Extractor benchmark: speed and agreement with hand-extracted text on real article pages.

Data: ../shared/data/web/article-extraction-benchmark (181 real article pages from 126 hosts, gzipped HTML, and
`ground-truth.json` with the hand-extracted article body of each). For each extractor we report documents per
second on one core (in-process, after a warm-up, no sandbox) and the agreement with the ground truth as
word-level precision, recall and F1 (bag of lower-cased words, averaged over pages, as the benchmark's own
evaluation does). The curate stage's default (`curate.extract.engine`) is the better trade-off of the two.

    .venv/bin/python benchmarks/extractors.py [--data ../shared/data/web/article-extraction-benchmark] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.curate.charset import decode_html  # noqa: E402
from pipelines.curate.extract import ENGINES  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "web" / "article-extraction-benchmark"
_WORD = re.compile(r"\w+")


def word_prf(predicted: str, truth: str) -> tuple[float, float, float]:
    p, t = Counter(_WORD.findall(predicted.lower())), Counter(_WORD.findall(truth.lower()))
    if not p and not t:
        return 1.0, 1.0, 1.0
    overlap = sum((p & t).values())
    precision = overlap / sum(p.values()) if p else 0.0
    recall = overlap / sum(t.values()) if t else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def load_pages(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    truth = {k: v["articleBody"] for k, v in json.loads((folder / "ground-truth.json").read_text()).items()}
    pages = {}
    for path in sorted((folder / "html").glob("*.html.gz")):
        key = path.name.split(".", 1)[0]
        if key in truth:
            pages[key] = decode_html(gzip.decompress(path.read_bytes()))[0]
    return pages, truth


def bench(name: str, pages: dict[str, str], truth: dict[str, str], repeats: int = 1) -> dict[str, float]:
    fn = ENGINES[name]
    fn(next(iter(pages.values())))  # warm-up (imports, lazy init)
    outputs = {}
    start = time.perf_counter()
    for _ in range(repeats):
        for key, html in pages.items():
            outputs[key] = fn(html) or ""
    seconds = time.perf_counter() - start
    scores = [word_prf(outputs[k], truth[k]) for k in pages]
    n = len(scores)
    return {
        "extractor": name,
        "pages": n,
        "docs_per_s": round(n * repeats / seconds, 1),
        "mb_per_s": round(sum(len(h.encode()) for h in pages.values()) * repeats / seconds / 1e6, 2),
        "precision": round(sum(s[0] for s in scores) / n, 3),
        "recall": round(sum(s[1] for s in scores) / n, 3),
        "f1": round(sum(s[2] for s in scores) / n, 3),
        "empty": sum(1 for k in pages if not outputs[k].strip()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if not (args.data / "ground-truth.json").is_file():
        print(f"skipped: {args.data} not found (needs ../shared/data/web/article-extraction-benchmark)")
        return 0
    pages, truth = load_pages(args.data)
    results = [bench(name, pages, truth) for name in ("trafilatura", "resiliparse")]
    traf, resi = results
    verdict = {
        "speedup_resiliparse_vs_trafilatura": round(resi["docs_per_s"] / traf["docs_per_s"], 1),
        "f1_difference": round(resi["f1"] - traf["f1"], 3),
    }
    if args.json:
        print(json.dumps({"results": results, **verdict}, indent=1))
        return 0
    print(
        f"data: {args.data} ({len(pages)} real article pages with hand-extracted text), one core, no sandbox"
    )
    print(
        f"{'extractor':<12} {'docs/s':>8} {'MB/s':>6} {'precision':>9} {'recall':>7} {'F1':>6} {'empty':>6}"
    )
    for r in results:
        print(
            f"{r['extractor']:<12} {r['docs_per_s']:>8} {r['mb_per_s']:>6} {r['precision']:>9} {r['recall']:>7} "
            f"{r['f1']:>6} {r['empty']:>6}"
        )
    print(
        f"resiliparse is {verdict['speedup_resiliparse_vs_trafilatura']}x faster at a word-F1 difference of "
        f"{verdict['f1_difference']:+.3f}; default: curate.extract.engine=resiliparse"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
