"""Scoring-step throughput in a streaming datatrove pipeline vs bare fastText predict, same texts, same process.

Baseline ("bare"): the bundle's own fastText models, `model.predict(list_of_texts, k=1)` once per dimension on
the raw texts (newlines replaced, the only thing predict requires), in batches of the same size. This is the
floor of any fastText scorer: no normalisation, no chunking, no calibration, no documents.

Measured ("step"): `classifiers.scoring.ProsocialScorer` inside a datatrove pipeline, documents streaming
from a generator reader through the step into a counting writer, exactly as the curate stage chains steps
(each step's `run` consumes the previous step's generator). The step normalises, chunks long pages, predicts
every dimension, calibrates, aggregates, applies the profile and writes metadata.

Input: the real extracted web documents of ../shared/data/web/dclm-human-quality (499 Common Crawl pages,
median ~2 KB) and the dolma-tests Common Crawl JSONL docs, repeated with a unique "copy N" suffix to
--docs documents. Target: step / bare >= 0.8.

    .venv/bin/python benchmarks/score_throughput.py [--docs 6000] [--model DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WEB = REPO.parent / "shared" / "data" / "web"
TARGET = 0.8


def load_texts(n: int) -> tuple[list[str], str]:
    texts: list[str] = []
    sources = []
    dclm = WEB / "dclm-human-quality" / "majority_data.jsonl"
    if dclm.is_file():
        texts += [json.loads(line)["text"] for line in dclm.open(encoding="utf-8") if line.strip()]
        sources.append(str(dclm))
    for path in sorted((WEB / "dolma-tests").glob("*.jsonl")):
        texts += [json.loads(line).get("text", "") for line in path.open(encoding="utf-8") if line.strip()]
        sources.append(str(path))
    gz = WEB / "dolma-tests" / "000.json.gz"
    if gz.is_file():
        with gzip.open(gz, "rt", encoding="utf-8") as handle:
            texts += [json.loads(line).get("text", "") for line in handle if line.strip()]
        sources.append(str(gz))
    texts = [t for t in texts if t.strip()]
    if not texts:
        from classifiers.testing import tiny_texts

        texts = [" ".join(tiny_texts(40, seed=i)[0]) for i in range(200)]
        sources = ["generated texts (../shared/data/web not found)"]
    out = [f"{texts[i % len(texts)]} copy {i}" for i in range(n)]
    note = f"{n} documents built from {len(texts)} real texts ({', '.join(sources)}), repeated with a 'copy N' suffix"
    return out, note


def bare_predict(models: list, texts: list[str], batch: int) -> int:
    count = 0
    for start in range(0, len(texts), batch):
        lines = [t.replace("\n", " ") for t in texts[start : start + batch]]
        for model in models:
            model.predict(lines, k=1)
        count += len(lines)
    return count


def step_pipeline(step, texts: list[str]) -> int:
    from datatrove.data import Document

    def reader():  # a streaming source, as a datatrove reader yields documents
        for index, text in enumerate(texts):
            yield Document(text=text, id=str(index))

    def sink(docs):  # a writer stand-in that consumes the stream
        count = 0
        for doc in docs:
            count += doc.metadata["prosocial"] >= 0.0
        return count

    return sink(step.run(reader(), rank=0, world_size=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of each; the best time counts"
    )
    args = parser.parse_args()

    from classifiers.bundle import cached_bundle, resolve_bundle_path
    from classifiers.scoring import ProsocialScorer

    texts, note = load_texts(args.docs)
    bundle = cached_bundle(resolve_bundle_path(args.model))
    models = [bundle.models[d].model for d in bundle.dimensions]
    step = ProsocialScorer(bundle=resolve_bundle_path(args.model), batch_size=args.batch)
    chunks, _ = bundle.chunk(texts[:1000])
    print(f"input: {note}")
    print(
        f"bundle {bundle.version}: {len(bundle.dimensions)} dimensions, ~{len(chunks) / 1000:.2f} chunks/doc"
    )
    bare_best = step_best = float("inf")
    bare_predict(models, texts[:500], args.batch)  # warm-up both paths
    step_pipeline(step, texts[:500])
    for _ in range(args.repeat):
        started = time.perf_counter()
        assert bare_predict(models, texts, args.batch) == len(texts)
        bare_best = min(bare_best, time.perf_counter() - started)
        started = time.perf_counter()
        assert step_pipeline(step, texts) == len(texts)
        step_best = min(step_best, time.perf_counter() - started)
    bare_rate, step_rate = len(texts) / bare_best, len(texts) / step_best
    ratio = step_rate / bare_rate
    print(f"bare fastText predict ({len(models)} models): {bare_rate:,.0f} docs/s")
    print(f"ProsocialScorer in a streaming datatrove pipeline: {step_rate:,.0f} docs/s")
    print(f"ratio step/bare = {ratio:.2f} (target >= {TARGET}) {'OK' if ratio >= TARGET else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
