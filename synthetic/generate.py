"""One chunk of the synthetic stage: scenarios -> requests -> completions (cached) -> validated rows.

A chunk is the unit of work and of resumption. Its scenarios are a pure function of (seed, index), so a task
needs only its chunk number. Completions are appended to a per-chunk request cache (JSONL) as the engine
hands them over, so a task that is retried (worker lost, killed run) sends only the requests the cache
lacks. The openai engine hands each completion over as it arrives. The vllm engine sends the chunk as one
`LLM.chat` batch (what its throughput needs) and hands over all of them only when the batch returns: a task
killed mid-batch loses that batch's completions, and its retry generates the whole chunk again. Keep
`chunk_size` at a size whose loss you can afford. The file I/O of finished chunks (atomic Parquet) belongs to
the caller (pipelines/synthesize.py).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from synthetic.engine import UNFINISHED, Completion, EngineSpec, Request, get_engine
from synthetic.scenarios import (
    Grid,
    Scenario,
    ScenarioSampler,
    build_messages,
    dialogue_schema,
    instruction_wording,
)
from synthetic.settings import SyntheticSettings
from synthetic.validate import (
    assistant_text,
    character_reasons,
    dimension_score,
    is_valid_unicode,
    language_reasons,
    leakage,
    lid_model,
    load_bundle_or_none,
    parse_dialogue,
    refusal,
    storable,
    structure_reasons,
)


class RequestCache:
    """Completions of one chunk, appended one JSON line each; a torn last line (killed writer) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._items: dict[str, Completion] = {}
        self._handle = None
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        data = json.loads(line)
                        completion = Completion(
                            data["request_id"],
                            data["text"],
                            data["finish_reason"],
                            int(data["output_tokens"]),
                        )
                    except (ValueError, KeyError, TypeError):
                        continue
                    if completion.finish_reason in UNFINISHED:  # cached by earlier code: ask again
                        continue
                    self._items[completion.request_id] = completion

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, request_id: str) -> Completion | None:
        return self._items.get(request_id)

    def add(self, completion: Completion) -> None:
        """Remember a successful completion (errors are not cached: the next attempt retries them).

        Written and flushed at once, so it survives the process being killed (the data is in the kernel);
        `sync()` makes it durable against a machine crash too, once per batch rather than per line.
        """
        if completion.error is not None or completion.request_id in self._items:
            return
        self._items[completion.request_id] = completion
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.is_file() and self.path.stat().st_size and _last_byte(self.path) != b"\n"
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by sync()
            if torn:  # a process killed mid-line: end that line, or the next record would merge into it
                self._handle.write("\n")
        line = json.dumps(completion.to_json(), ensure_ascii=False)
        if not is_valid_unicode(line):  # a lone surrogate (an endpoint's JSON escape): keep it as \\udXXX
            line = json.dumps(completion.to_json())
        self._handle.write(line + "\n")
        self._handle.flush()

    def sync(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


@dataclass
class ChunkResult:
    rows: list[dict[str, Any]]
    counts: Counter = field(default_factory=Counter)
    dimensions: list[str] = field(default_factory=list)  # the bundle's, i.e. the ps_* columns of `rows`
    notes: list[str] = field(default_factory=list)  # e.g. why no classifier bundle could be loaded


def chunk_bounds(chunk: int, chunk_size: int, target: int) -> tuple[int, int]:
    start = chunk * chunk_size
    return start, min(target, start + chunk_size)


def n_chunks(target: int, chunk_size: int) -> int:
    return (target + chunk_size - 1) // chunk_size


def make_requests(settings: SyntheticSettings, grid: Grid, scenarios: list[Scenario]) -> list[Request]:
    schema = dialogue_schema(settings.min_turns, settings.max_turns, settings.max_chars)
    s = settings.sampling
    return [
        Request.make(
            build_messages(
                sc, grid, settings.min_turns, settings.max_turns, settings.excerpt_chars, settings.language
            ),
            schema,
            s.temperature,
            s.top_p,
            s.max_tokens,
            settings.seed,
            settings.model,
            salt=sc.index,
        )
        for sc in scenarios
    ]


def run_chunk(
    settings: SyntheticSettings,
    grid: Grid,
    sampler: ScenarioSampler,
    chunk: int,
    cache_path: str | Path,
    bundle_path: str | Path | None,
    spec: EngineSpec | None = None,
) -> ChunkResult:
    """Generate (what the cache lacks) and validate one chunk; return every attempt as a row, with counts."""
    start, stop = chunk_bounds(chunk, settings.chunk_size, settings.target)
    scenarios = sampler.sample_range(start, stop)
    requests = make_requests(settings, grid, scenarios)
    cache = RequestCache(cache_path)
    todo = [r for r in requests if r.id not in cache]
    counts: Counter = Counter(attempted=len(requests), cached=len(requests) - len(todo))
    errors: dict[str, Completion] = {}
    if todo:
        engine = get_engine(spec or EngineSpec.from_settings(settings))
        began = time.perf_counter()
        try:
            for completion in engine.generate(todo, on_result=cache.add):
                if completion.error is not None:
                    errors[completion.request_id] = completion
                counts["generated"] += 1
                counts["output_tokens"] += completion.output_tokens
        finally:
            cache.sync()
        counts["generate_ms"] += int((time.perf_counter() - began) * 1000)
    completions = [cache.get(r.id) or errors[r.id] for r in requests]
    result = ChunkResult([], counts)
    result.rows = validate_attempts(settings, grid, scenarios, requests, completions, bundle_path, result)
    return result


def validate_attempts(
    settings: SyntheticSettings,
    grid: Grid,
    scenarios: list[Scenario],
    requests: list[Request],
    completions: list[Completion],
    bundle_path: str | Path | None,
    result: ChunkResult,
) -> list[dict[str, Any]]:
    """Apply every per-dialogue check; each failing check adds its reason to the row's `validation`.

    A check that crashes on one dialogue (an input nobody foresaw) rejects that dialogue with
    `validation_error` and a note; it must not fail the chunk, because the request cache would replay the
    same completion on every retry and the chunk could never finish. Batched checks (language, classifier)
    are retried one dialogue at a time after a crash to find the culprit.
    """
    counts = result.counts
    parsed = [parse_dialogue(c.text, c.finish_reason, c.error) for c in completions]
    reasons: list[list[str]] = [[p.reason] if p.reason else [] for p in parsed]
    ok = [i for i, p in enumerate(parsed) if p.turns is not None]
    counts["parsed"] += len(ok)
    counts["control_chars_replaced"] += sum(p.replaced_control_chars for p in parsed)

    def failed(i: int, check: str, exc: BaseException) -> None:
        if "validation_error" not in reasons[i]:
            reasons[i].append("validation_error")
        result.notes.append(
            storable(f"request {requests[i].id}: {check} check failed: {type(exc).__name__}: {exc}")[:500]
        )

    for i in ok:
        turns = parsed[i].turns
        try:
            found = structure_reasons(
                turns, settings.min_turns, settings.max_turns, settings.min_chars, settings.max_chars
            )
            if settings.character_checks:
                found += character_reasons(turns, settings.language)
            if leakage(turns, prompt_instructions(requests[i])):
                found.append("template_leakage")
            if refusal(turns):
                found.append("refusal_boilerplate")
        except Exception as exc:
            failed(i, "structure/characters/leakage/refusal", exc)
        else:
            reasons[i] += found

    languages: dict[int, tuple[str, float]] = {}
    if ok:
        lid_model()  # outside the per-dialogue guard: a missing model is the run's problem, not a dialogue's
    detected = per_dialogue(
        lambda batch: list(
            zip(*language_reasons(batch, settings.language, settings.min_language_score), strict=True)
        ),
        [parsed[i].turns for i in ok],
    )
    for i, outcome in zip(ok, detected, strict=True):
        if isinstance(outcome, BaseException):
            failed(i, "language", outcome)
            continue
        languages[i], extra = outcome
        reasons[i] += extra

    bundle, why = load_bundle_or_none(bundle_path)
    dims = list(bundle.dimensions) if bundle is not None else []
    result.dimensions = dims
    if bundle is None:
        result.notes.append(f"no classifier bundle: {why}")
    scores: dict[int, dict[str, float]] = {i: {} for i in ok}
    unscored: set[int] = set()
    if bundle is not None and ok:

        def score(texts: list[str]) -> list[dict[str, float]]:
            scored = bundle.score(texts)
            return [{d: float(scored[d][j]) for d in dims} for j in range(len(texts))]

        for i, outcome in zip(
            ok, per_dialogue(score, [assistant_text(parsed[i].turns) for i in ok]), strict=True
        ):
            if isinstance(outcome, BaseException):
                failed(i, "classifier", outcome)
                unscored.add(i)
            else:
                scores[i] = outcome
    judged: dict[int, float | None] = {}
    for i in ok:
        if i in unscored:
            continue
        dimension = scenarios[i].dimension
        threshold = settings.threshold(dimension)
        judged[i] = dimension_score(scores[i], dimension) if bundle is not None else None
        if bundle is None:
            if threshold > 0:
                reasons[i].append("no_classifier")
        elif judged[i] is None or judged[i] < threshold:
            reasons[i].append(f"low_score_{dimension}")

    rows = []
    for i, (sc, req, comp) in enumerate(zip(scenarios, requests, completions, strict=True)):
        passed = not reasons[i]
        for reason in reasons[i]:
            counts[f"reason:{reason}"] += 1
        counts["passed_checks" if passed else "rejected"] += 1
        lang = languages.get(i, (None, None))
        row = {
            "id": req.id,
            "messages": parsed[i].turns or [],
            "dimension": sc.dimension,
            "scenario": sc.description,
            "persona": sc.persona,
            "domain": sc.domain,
            "style": sc.style,
            "scenario_index": sc.index,
            "grounding_doc_id": sc.grounding.doc_id if sc.grounding else None,
            "model": settings.model,
            "sampling": req.sampling_record(),
            "validation": {
                "passed": passed,
                "reasons": reasons[i],
                "language": lang[0],
                "language_score": lang[1],
                "score": judged.get(i),
                "near_duplicate_of": None,
            },
            "output_tokens": comp.output_tokens,
            # "error: ..." only for an engine error: a completion without a finish reason (some endpoints send
            # null) was stored as "error: " and counted as an engine error although it was answered
            "finish_reason": (
                storable(("error: " + comp.error)[:300])
                if comp.error is not None
                else comp.finish_reason and storable(comp.finish_reason)
            ),
            "raw": storable(comp.text if comp.error is None else comp.error),
        }
        for d in dims:
            row[f"ps_{d}"] = scores.get(i, {}).get(d)
        rows.append(row)
    return rows


def prompt_instructions(request: Request) -> str:
    """The wording a dialogue must not copy: the system prompt and the user prompt's instructions (without
    its excerpt and scenario line). A model echoing its system prompt ("You write realistic example
    conversations between a user and an AI assistant ...") leaks the template as much as one echoing the
    user prompt."""
    return "\n".join(
        instruction_wording(content) for role, content in request.messages if role in ("system", "user")
    )


_T = TypeVar("_T")
_R = TypeVar("_R")


def per_dialogue(check: Callable[[list[_T]], list[_R]], items: list[_T]) -> list[_R | Exception]:
    """`check(items)` in one batch (fast); if it raises, one item at a time, so a crash costs only the
    dialogue that caused it (its slot holds the exception)."""
    if not items:
        return []
    try:
        return list(check(items))
    except Exception:
        outcomes: list[_R | Exception] = []
        for item in items:
            try:
                [one] = check([item])
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(one)
        return outcomes
