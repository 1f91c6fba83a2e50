"""The curate stage: raw web shards -> extracted, language-identified, filtered, deduplicated, scored Parquet.

One datatrove pipeline per rank, run on the Dask cluster by DaskPipelineExecutor:

    read -> extract (HTML only) -> language ID -> Gopher repetition -> Gopher quality -> C4 lines -> FineWeb
         -> empty after cleaning -> exact dedup + stable id -> token count -> prosocial scoring
         -> scored Parquet -> rank ledger

then a driver-side finishing pass (pipelines.curate.finalize) for cross-rank exact dedup and per-shard counts.
Language ID runs before the quality filters so that every non-kept language is counted under `language`
and the stop-word rule can use the detected language.

Stage folder `work/<run_id>/curate/`: `plan.json` (work units per rank), datatrove's logging layout
(`completions/`, `logs/`, `stats/`, `stats.json`), `ranks/` (per-rank shards, hash sidecars, ledgers),
`output/*.parquet` (the curated shards), `counts/<rank>.json` and `counts.parquet` (per-shard counts),
`excluded/` (with `curate.exclusions: true`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger

from pipelines.atomic import write_json_atomic, write_text_atomic
from pipelines.config import ConfigError, CorpusConfig
from pipelines.context import RunContext
from pipelines.curate.inputs import (
    BAD_INPUT_REASONS,
    InputError,
    Plan,
    describe_skipped,
    discover,
    is_bad_input,
    make_plan,
    unsplittable_warning,
)

STAGE = "curate"
SKIPPED_LISTED = 100  # the stage summary lists at most this many skipped files (plan.json has them all)
SKIPPED_LOGGED = 20  # and logs at most this many, one line each


# -- checks before any work ---------------------------------------------------------------------------------
def _scoring_available() -> bool:
    try:
        import classifiers.scoring  # noqa: F401
    except ImportError:
        return False
    return True


def preflight(config: CorpusConfig) -> None:
    """Fail in the first second, naming the key, on missing inputs, models, tokenizer or any profile."""
    from classifiers.langid import check_lid_model, lid_languages, lid_model_path
    from pipelines.curate.tokens import resolve_tokenizer

    if not config.input:
        raise ConfigError("input: no input given (set input=PATH_OR_GLOB)")
    try:
        files, skipped = discover(config.input)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    if config.strict and any(is_bad_input(e) for e in skipped):
        raise ConfigError(f"input: {strict_stop(skipped)}")
    if not files:
        raise ConfigError(
            f"input: {config.input} contains no readable files (WARC, WET, JSONL, Parquet, HTML)"
        )
    if not config.curate.languages:
        raise ConfigError("curate.languages: expected at least one language code, e.g. [en]")
    try:
        lid_path = lid_model_path()
        check_lid_model(lid_path)
        resolve_tokenizer(config.curate.tokenizer)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    known = lid_languages(lid_path)
    unknown = [code for code in config.curate.languages if code not in known]
    if unknown:
        raise ConfigError(
            f"curate.languages: {unknown} are not language codes of {lid_path.name} "
            "(expected lower-case codes such as en, de, fr, zh)"
        )
    # Every profile, scored or not, as the mix stage loads them hours after this point. A missing or invalid
    # profile raises ProfileError, which names the file and key.
    from pipelines.mix.stage import MixError, load_profiles

    try:
        profiles = load_profiles(list(config.profile))
    except MixError as exc:  # no profile, or two with one name (each mixture's folder is named after it)
        raise ConfigError(str(exc)) from None
    step, dims, _version = _scorer_and_dimensions(config)
    if step is not None:
        from classifiers.bundle import BundleError, load_bundle

        try:
            load_bundle(step.bundle_path)  # checks every model file before fastText sees it
        except BundleError as exc:
            raise ConfigError(f"classifier.bundle: {exc}") from None
        for label, profile in zip(config.profile, profiles, strict=True):
            lacking = [d for d in profile.dimensions if d not in dims]
            if lacking:
                raise ConfigError(
                    f"profile: '{label}' weights dimensions {lacking} that classifier.bundle "
                    f"({step.bundle_path}) does not score (it scores {dims})"
                )


def strict_stop(skipped: list[dict[str, str]]) -> str:
    """The message a `strict` run stops with at the first bad input file of `skipped`."""
    bad = [e for e in skipped if is_bad_input(e)]
    more = f" ({len(bad) - 1} more like it)" if len(bad) > 1 else ""
    return f"{describe_skipped(bad[0])}{more}; strict=true stops at the first input file it cannot read"


def _scorer_and_dimensions(config: CorpusConfig) -> tuple[Any, list[str], str | None]:
    """(scoring step or None, dimensions for the ps_* columns, classifier version).

    Scoring is skipped, with a warning, when `curate.score` is false, when classifiers.scoring is not
    installed, or when `classifier.bundle` is 'default' and no default bundle was built yet (`make
    classifier`); an explicitly configured bundle that is missing or broken is a ConfigError.
    """
    if not (config.curate.score and _scoring_available()):
        return None, [], None
    from classifiers.bundle import BundleError, read_manifest, resolve_bundle_path
    from classifiers.profiles import ProfileError
    from classifiers.scoring import ProsocialScorer

    path = resolve_bundle_path(config.classifier.bundle)
    if config.classifier.bundle in ("", "default") and not path.exists():
        logger.warning(
            f"{STAGE}: no default classifier bundle at {path} (run `make classifier`); not scoring"
        )
        return None, [], None
    try:
        manifest = read_manifest(path)
        step = ProsocialScorer(
            bundle=str(path),
            profile=config.profile[0] if config.profile else "default",
            batch_size=config.classifier.batch_size,
        )
    except BundleError as exc:
        raise ConfigError(f"classifier.bundle: {exc}") from None
    except ProfileError:
        raise  # already names the profile file and key
    return step, list(manifest["dimensions"]), str(manifest["version"])


# -- planning -----------------------------------------------------------------------------------------------
def _workers(ctx: RunContext) -> int:
    if ctx.client is not None:
        try:
            return max(1, len(ctx.client.scheduler_info(n_workers=-1)["workers"]))
        except Exception:  # pragma: no cover - scheduler info shape differs across versions
            pass
    return ctx.config.cluster.n_workers


def load_or_make_plan(
    stage: Path,
    inputs: list[str],
    config: CorpusConfig,
    workers: int,
    skipped: list[dict[str, str]] | None = None,
) -> Plan:
    """The saved plan when the input listing is unchanged; otherwise a new plan (and a clean stage folder).

    `inputs` were listed before (by preflight or the graph), so one that is gone now is a skipped entry of the
    plan, not an error (see `discover(listed=True)`). `skipped` are the files that earlier listing skipped (the
    graph passes only readable files as `inputs`); the plan records them with its own.
    """
    cur = config.curate
    plan = make_plan(
        list(inputs),
        tasks=cur.tasks,
        workers=workers,
        split_bytes=cur.read.split_bytes,
        min_split_bytes=cur.read.min_split_bytes,
        listed=True,
    )
    merged = {e["path"]: e for e in [*(skipped or []), *plan.skipped]}
    plan.skipped = [merged[k] for k in sorted(merged)]
    warning = unsplittable_warning(plan.files, cur.read.split_bytes)
    if warning:
        logger.warning(f"{STAGE}: {warning}")
    saved_path = stage / "plan.json"
    if saved_path.is_file():
        saved = Plan.from_json(saved_path.read_text())
        if saved.fingerprint() == plan.fingerprint() and saved.inputs == plan.inputs:
            if saved.skipped != plan.skipped:  # the same files to read; what is skipped beside them changed
                saved.skipped = plan.skipped
                write_text_atomic(saved_path, saved.to_json())
            return saved
        logger.warning(f"{STAGE}: inputs changed since {saved_path} was planned; starting the stage over")
        for sub in ("completions", "stats", "ranks", "output", "counts", "excluded", "logs"):
            shutil.rmtree(stage / sub, ignore_errors=True)

    write_text_atomic(saved_path, plan.to_json())
    return plan


# -- the pipeline -------------------------------------------------------------------------------------------
def build_pipeline(plan: Plan, config: CorpusConfig, stage: Path) -> tuple[list, dict[str, Any]]:
    """The datatrove steps of one curate rank, and facts about them for the summary."""
    from classifiers.langid import lid_model_path
    from pipelines.curate.exclusions import exclusion_writer
    from pipelines.curate.extract import HtmlExtractor
    from pipelines.curate.filters import OfflineLanguageFilter, quality_steps
    from pipelines.curate.identity import ExactDedup
    from pipelines.curate.output import RankLedger, ScoredShardWriter
    from pipelines.curate.readers import CurateReader
    from pipelines.curate.tokens import TokenCounter, resolve_tokenizer

    cur = config.curate
    excluded = str(stage / "excluded") if cur.exclusions else None

    def excl(name: str):
        return exclusion_writer(excluded, name)

    scorer, dimensions, version = _scorer_and_dimensions(config)
    steps: list = [
        CurateReader(plan, cur.read, strict=config.strict, exclusion_dir=excluded),
        HtmlExtractor(cur.extract, exclusion_dir=excluded),
        OfflineLanguageFilter(
            cur.languages, str(lid_model_path()), cur.language_threshold, exclusion_writer=excl("language")
        ),
        *quality_steps(cur.gopher_repetition, cur.gopher_quality, cur.c4, cur.fineweb, exclusion=excl),
        ExactDedup(enabled=cur.exact_dedup, exclusion_dir=excluded),
        TokenCounter(str(resolve_tokenizer(cur.tokenizer))),
    ]
    if scorer is not None:
        steps.append(scorer)
    steps.append(ScoredShardWriter(str(stage / "ranks"), dimensions, row_group_rows=cur.row_group_rows))
    units = [[u.describe() for u in plan.units_of(rank)] for rank in range(plan.world_size)]
    steps.append(RankLedger(str(stage / "ranks"), list(steps), units, strict=config.strict))
    facts = {"extractor": cur.extract.engine, "scored": scorer is not None, "classifier_version": version}
    return steps, facts


def _summary(all_counts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {
        "documents_in": 0,
        "documents_out": 0,
        "dropped": {},
        "file_errors": {},
        "repaired": {},
        "unreadable_inputs": [],
    }
    for c in all_counts:
        total["unreadable_inputs"] += c.get("unreadable_inputs", [])
        total["documents_in"] += c["documents_in"]
        total["documents_out"] += c["documents_out"]
        for bucket in ("dropped", "file_errors", "repaired"):
            for reason, n in c[bucket].items():
                total[bucket][reason] = total[bucket].get(reason, 0) + n
    for bucket in ("dropped", "file_errors", "repaired"):
        total[bucket] = dict(sorted(total[bucket].items(), key=lambda kv: (-kv[1], kv[0])))
    total["unaccounted"] = total["documents_in"] - total["documents_out"] - sum(total["dropped"].values())
    total["unreadable_inputs"] = sorted(set(total["unreadable_inputs"]))
    return total


def _report_skipped(plan: Plan, inputs: list[str], strict: bool, plan_path: Path) -> dict[str, Any]:
    """Log the plan's skipped files and return them for the summary; with `strict`, stop at the first bad one.

    Why here: the graph lists the inputs before the run log exists and passes on only readable files; this is
    where the run's log and summary learn what was not read. Bad inputs (broken links, FIFOs, files gone since
    listing) are logged one by one as warnings; files in no readable format (LICENSE, README, a `.csv`) in one
    line. An input of the batch itself that was skipped (gone or changed since it was listed) was not read: it
    is an unreadable input, which the state store does not mark seen, so the next refresh retries it.
    """
    skipped = plan.skipped
    bad = [e for e in skipped if is_bad_input(e)]
    if strict and bad:
        raise InputError(strict_stop(skipped))
    by_reason: dict[str, int] = {}
    for entry in skipped:
        by_reason[entry["reason"]] = by_reason.get(entry["reason"], 0) + 1
    for entry in bad[:SKIPPED_LOGGED]:
        logger.warning(f"{STAGE}: bad input {describe_skipped(entry)}")
    if len(bad) > SKIPPED_LOGGED:
        logger.warning(f"{STAGE}: {len(bad) - SKIPPED_LOGGED} more bad input files skipped (see {plan_path})")
    not_read = [e for e in skipped if not is_bad_input(e)]
    if not_read:
        names = ", ".join(e["path"] for e in not_read[:5]) + (", ..." if len(not_read) > 5 else "")
        counts = ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items()) if r not in BAD_INPUT_REASONS)
        logger.info(f"{STAGE}: {len(not_read)} files in no format it reads are not read ({counts}): {names}")
    named = set(inputs)
    return {
        "skipped_files": skipped[:SKIPPED_LISTED],
        "skipped_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unreadable_inputs": sorted(e["path"] for e in skipped if e["path"] in named),
    }


def _with_skipped(summary: dict[str, Any], skipped: dict[str, Any]) -> dict[str, Any]:
    """The stage summary with the skipped bad inputs counted among its file errors, and the skipped files."""
    errors = dict(summary["file_errors"])
    for reason, n in skipped["skipped_by_reason"].items():
        if reason in BAD_INPUT_REASONS:
            errors[reason] = errors.get(reason, 0) + n
    return {
        **summary,
        "file_errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unreadable_inputs": sorted({*summary["unreadable_inputs"], *skipped["unreadable_inputs"]}),
        "skipped_files": skipped["skipped_files"],
        "skipped_by_reason": skipped["skipped_by_reason"],
    }


def run_curate(
    ctx: RunContext, inputs: list[str], skipped: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """Curate `inputs` into `work/<run_id>/curate/output/*.parquet`; return the stage summary.

    The summary has `output_dir`, `documents_in`, `documents_out`, `dropped` {reason: n}, `file_errors`
    {reason: n} (the readers' and the skipped bad input files'), `repaired`, `unreadable_inputs`,
    `skipped_files` (the first SKIPPED_LISTED, each {path, reason}; `plan.json` has all), `skipped_by_reason`
    (bad inputs and files in no readable format; see pipelines.curate.inputs.SKIP_REASONS), `shards`,
    `counts_dir` (per-shard JSON) and `counts_table` (per-shard Parquet). `skipped` are input files an earlier
    listing skipped (the graph's); with `strict` the stage stops at the first bad one.
    """
    from pipelines.curate.finalize import finalize
    from pipelines.executor import DaskPipelineExecutor

    config = ctx.config
    stage = ctx.stage_dir(STAGE)
    plan = load_or_make_plan(stage, inputs, config, _workers(ctx), skipped)
    skipped_report = _report_skipped(plan, list(inputs), config.strict, stage / "plan.json")
    result: dict[str, Any] = {
        "output_dir": str(stage / "output"),
        "counts_dir": str(stage / "counts"),
        "counts_table": str(stage / "counts.parquet"),
        "ranks": plan.world_size,
    }
    (stage / "output").mkdir(parents=True, exist_ok=True)
    if plan.world_size == 0:
        logger.warning(f"{STAGE}: no readable input files in {list(inputs)}")
        return {**result, **_with_skipped(_summary([]), skipped_report), "shards": 0}
    steps, facts = build_pipeline(plan, config, stage)
    executor = DaskPipelineExecutor(
        steps,
        tasks=plan.world_size,
        logging_dir=str(stage),
        client=ctx.client,
        name=STAGE,
        fail_fast=config.strict,
    )
    executor.run()
    all_counts = finalize(
        stage, plan.world_size, exact_dedup=config.curate.exact_dedup, exclusions=config.curate.exclusions
    )
    summary = _with_skipped(_summary(all_counts), skipped_report)
    if summary["unaccounted"]:
        logger.error(f"{STAGE}: {summary['unaccounted']} documents unaccounted for; see {stage / 'counts'}")
    shards = sum(1 for c in all_counts if c.get("shard"))
    logger.info(
        f"{STAGE}: {summary['documents_in']} documents in, {summary['documents_out']} out, "
        f"{sum(summary['dropped'].values())} dropped, {shards} shards in {stage / 'output'}"
    )
    summary = {**result, **summary, **facts, "shards": shards}
    write_json_atomic(stage / "summary.json", summary, indent=1)
    return summary
