"""Output tokens/s through the synthetic stage vs bare `vllm.LLM.generate`, same prompts/sampling/model/run.

Both sides use ONE loaded engine (the stage's per-process cached engine; the baseline calls `generate` on its
`LLM` object directly), so the ratio measures what the stage adds on top of vLLM: scenario sampling, request
building and caching, splitting the work into chunks (each chunk is one `LLM.chat` batch, exactly as a Dask
task sends it), validation (structure, lid.176, classifier, leakage) and atomic Parquet writes. The stage side
runs the stage's own datatrove step (`pipelines.synthesize.SynthesizeChunks`) rank by rank, as the Dask
executor does on a worker, and then the run-level finalize (near-duplicates, midtrain Parquet).

The baseline gets the same token inputs (the chat template applied by the model's tokenizer, as `LLM.chat`
does) and the same SamplingParams (guided JSON, per-request seeds, temperature, top_p, max_tokens).

    python benchmarks/synth_throughput.py                       # CPU, tiny random model (a smoke check)
    python benchmarks/synth_throughput.py --model Qwen/Qwen2.5-7B-Instruct --n 1024 --chunk-size 512 \
        --dtype bfloat16 --max-model-len 8192                   # on a GPU worker (see README)

Prints both rates and the ratio stage/bare (target >= 0.9). With --chunk-size smaller than --n the stage
sends smaller batches than the baseline, which shows what chunking costs on your hardware.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:tiny-random-llama")
    parser.add_argument("--n", type=int, default=64, help="dialogues (prompts) per side")
    parser.add_argument("--chunk-size", type=int, default=0, help="dialogues per stage task (default: --n)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--bundle", default="", help="classifier bundle for the score check (default: none)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate baseline/stage this many times; best of each"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from synthetic.engine import EngineSpec, get_engine
    from synthetic.generate import make_requests, n_chunks
    from synthetic.scenarios import ScenarioSampler, load_grid
    from synthetic.settings import SamplingSettings, SyntheticSettings

    settings = SyntheticSettings(
        model=args.model,
        target=args.n,
        chunk_size=args.chunk_size or args.n,
        min_score=0.0,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        sampling=SamplingSettings(max_tokens=args.max_tokens),
        grounding_fraction=0.0,
    )
    began = time.perf_counter()
    engine = get_engine(EngineSpec.from_settings(settings))
    load_s = time.perf_counter() - began
    llm = engine.llm
    grid = load_grid(settings.grid)
    requests = make_requests(
        settings, grid, ScenarioSampler(grid, seed=settings.seed).sample_range(0, args.n)
    )
    tokenizer = llm.get_tokenizer()
    prompts = [
        tokenizer.apply_chat_template(r.chat_messages(), tokenize=False, add_generation_prompt=True)
        for r in requests
    ]
    params = [engine.sampling_params(r) for r in requests]
    llm.generate(prompts[:2], params[:2], use_tqdm=False)  # warm-up (grammar compiler, kernels)

    def bare() -> tuple[int, float]:
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs), time.perf_counter() - start

    def stage() -> tuple[int, float, dict]:
        from pipelines.synthesize import SynthesizeChunks, finalize

        with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
            work = Path(tmp)
            step = SynthesizeChunks(settings.model_dump(mode="json"), str(work), args.bundle or None, [])
            chunks = n_chunks(settings.target, settings.chunk_size)
            start = time.perf_counter()
            for rank in range(chunks):
                for _ in step.run(None, rank, chunks):
                    pass
            summary = finalize(settings, work, work / "midtrain", chunks)
            elapsed = time.perf_counter() - start
            counts = [json.loads(p.read_text()) for p in (work / "counts").glob("*.json")]
            tokens = sum(c["output_tokens"] for c in counts)
            summary["generate_s"] = sum(c.get("generate_ms", 0) for c in counts) / 1000
        return tokens, elapsed, summary

    best_bare = best_stage = 0.0
    rows = []
    summary: dict = {}
    for round_ in range(args.rounds):
        b_tokens, b_s = bare()
        s_tokens, s_s, summary = stage()
        best_bare = max(best_bare, b_tokens / b_s)
        best_stage = max(best_stage, s_tokens / s_s)
        rows.append(
            {
                "round": round_,
                "bare_tokens": b_tokens,
                "bare_s": round(b_s, 2),
                "stage_tokens": s_tokens,
                "stage_s": round(s_s, 2),
                "stage_generate_s": round(summary["generate_s"], 2),
            }
        )
        print(
            f"round {round_}: bare {b_tokens} tokens in {b_s:.2f} s ({b_tokens / b_s:.0f}/s); "
            f"stage {s_tokens} tokens in {s_s:.2f} s ({s_tokens / s_s:.0f}/s; "
            f"{summary['generate_s']:.2f} s of it inside the engine)"
        )
    ratio = best_stage / best_bare if best_bare else float("nan")
    from vllm.platforms import current_platform

    device = "cpu" if current_platform.is_cpu() else current_platform.device_name
    result = {
        "model": args.model,
        "device": device,
        "n": args.n,
        "chunk_size": settings.chunk_size,
        "max_tokens": args.max_tokens,
        "engine_load_s": round(load_s, 1),
        "bare_tokens_per_s": round(best_bare, 1),
        "stage_tokens_per_s": round(best_stage, 1),
        "ratio": round(ratio, 3),
        "target": 0.9,
        "rounds": rows,
        "stage_attempted": summary.get("attempted"),
        "stage_parseable_fraction": summary.get("parseable_fraction"),
    }
    print(json.dumps(result, indent=2))
    verdict = "meets" if ratio >= 0.9 else "BELOW"
    print(
        f"stage/bare output tokens/s = {ratio:.3f} ({verdict} the 0.9 target) on {device}, model {args.model}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    from synthetic.engine import close_engine

    close_engine()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
