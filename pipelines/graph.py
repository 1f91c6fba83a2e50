"""The stage graph of `corpus run` and `corpus refresh`: curate -> dedup -> mix -> synthesize -> publish -> commit.

One graph, two modes:

- **full** (`corpus run`): every input is curated and deduplicated within itself; after publishing, the state
  store (`OUT/state/`) is reset to this run's inputs, kept scored shards and MinHash index.
- **refresh** (`corpus refresh`): only inputs whose (path, size, modified, etag) the state store has not seen
  are curated; their documents are deduplicated among themselves and against the published corpus's MinHash
  index; the mixture is rebuilt from every kept batch plus this one; synthetic dialogues are carried over from
  `latest` and new ones attempted until `synthetic.target` have been attempted since the last full run; after
  publishing, the batch is added to the state store.

Both hold `RunLock(OUT/state/run.lock)` throughout, and both first finish any run that a crash interrupted after
its version went live (`recover`). A run's work folder is keyed by a hash of its config and its input listing,
so rerunning the same command after a crash resumes it (datatrove completion markers skip finished ranks)
instead of starting over. Nothing is visible to readers until publish renames the verified version into place
and flips `latest`; the state store changes only after that (pipelines.publish.state).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger

from pipelines.atomic import copy_atomic
from pipelines.cluster import connect
from pipelines.config import ConfigError, CorpusConfig, dump_config, flatten
from pipelines.context import RunContext
from pipelines.publish.faults import fault_point
from pipelines.publish.state import State, StateError, StateStore, input_mark, read_journal, write_journal

MODES = ("full", "refresh")
NEW_INPUTS_LISTED = 100  # the summary lists at most this many new input paths (the journal keeps all)


# -- identities ---------------------------------------------------------------------------------------------
def config_hash(config: CorpusConfig) -> str:
    """Hash of everything that changes the output (not where, how, or how long it is kept).

    `out` and how the state is kept (`publish.retention`, `index_max_files`, `shard_batches_max`, `shard_file_mb`)
    are left out: the same run resumed with OUT spelt differently, another retention or compaction is the same
    run.
    """
    data = dump_config(config)
    for volatile in ("cluster", "out"):
        data.pop(volatile, None)
    for kept_how in ("retention", "index_max_files", "shard_batches_max", "shard_file_mb"):
        data.get("publish", {}).pop(kept_how, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings of the scoring sections that change how fast or where work runs, never which documents are kept or
# how they score: a refresh may change them freely.
NOT_SHAPING = {
    "curate": ("tasks", "exclusions", "row_group_rows", "read.split_bytes", "read.min_split_bytes"),
    "classifier": ("batch_size", "bundle"),  # the bundle's content is `classifier_version`, not its path
    "dedup": ("tasks", "workers_per_bucket"),
}
SCORING_SECTIONS = tuple(NOT_SHAPING)


def scoring_identity(config: CorpusConfig) -> dict[str, Any]:
    """What shapes a kept scored document: batches made under different values must not be mixed by a refresh.

    Per section a hash of its shaping settings, plus the settings themselves (`settings`), so that a refusal
    can name the keys that changed.
    """
    data = dump_config(config)
    bundle_version = None
    try:
        from classifiers.bundle import read_manifest, resolve_bundle_path

        path = resolve_bundle_path(config.classifier.bundle)
        if path.exists():
            bundle_version = str(read_manifest(path).get("version"))
    except Exception:  # no bundle (scoring off or not built): curate decides what that means
        pass
    settings = {}
    for section in SCORING_SECTIONS:
        flat = flatten(data[section], f"{section}.")
        settings.update({k: v for k, v in flat.items() if k.split(".", 1)[1] not in NOT_SHAPING[section]})
    identity: dict[str, Any] = {
        section: _short_hash({k: v for k, v in settings.items() if k.startswith(f"{section}.")})
        for section in SCORING_SECTIONS
    }
    return {
        **identity,
        "classifier_version": bundle_version,
        "profile": (config.profile or ["default"])[0],
        "settings": json.loads(json.dumps(settings, default=str)),
    }


def changed_scoring(recorded: dict[str, Any], config: CorpusConfig) -> list[str]:
    """What differs between a state's recorded scoring identity and `config`'s, named as precisely as known."""
    now = scoring_identity(config)
    full = dump_config(config)
    changed = []
    for key, value in now.items():
        if key == "settings" or recorded.get(key) == value:
            continue
        if key in SCORING_SECTIONS and recorded.get(key) == _short_hash(full[key]):
            continue  # recorded before NOT_SHAPING existed: a hash of the whole section, and it still matches
        before = recorded.get("settings")
        if key in SCORING_SECTIONS and isinstance(before, dict):
            keys = sorted(k for k in {*before, *now["settings"]} if k.startswith(f"{key}."))
            changed += [
                f"{k}: {before.get(k)!r} -> {now['settings'].get(k)!r}"
                for k in keys
                if before.get(k) != now["settings"].get(k)
            ] or [key]
        elif key in SCORING_SECTIONS:
            changed.append(f"{key} (some setting)")
        else:
            changed.append(f"{key}: {recorded.get(key)!r} -> {value!r}")
    return changed


def discover_inputs(config: CorpusConfig) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """(every readable input under the configured globs: url -> {size, modified, etag}, the files skipped).

    Curate's discovery. The skipped files ({path, reason}: broken links, FIFOs, files in no readable format) go
    to the curate stage, which logs them and records them in `plan.json` and its summary, and counts the bad
    ones as file errors; they are never marked seen, so each refresh reports them again until they are fixed.
    """
    from pipelines.curate.inputs import InputError, discover

    try:
        files, skipped = discover(list(config.input))
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    return {f.path: input_mark(f.size, f.modified, f.etag) for f in files}, skipped


def batch_run_id(mode: str, config: CorpusConfig, inputs: dict[str, dict[str, Any]]) -> str:
    """`run-<hash>` / `refresh-<hash>` of (config, the batch's input listing): a rerun resumes the same folder."""
    digest = _short_hash({"config": config_hash(config), "inputs": inputs})[:12]
    return f"{'run' if mode == 'full' else 'refresh'}-{digest}"


# -- checks ---------------------------------------------------------------------------------------------------
def preflight_all(config: CorpusConfig) -> None:
    """Fail before taking the lock or starting a cluster: output folder, inputs, models, profile, synthetic."""
    from pipelines.curate.stage import preflight

    preflight(config)
    if config.synthetic.enabled and config.synthetic.target > 0:
        from pipelines.synthesize import preflight as synth_preflight

        try:
            synth_preflight(config.synthetic)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    # created last: a config error must not leave an empty OUT behind
    try:  # OUT=/proc/x or a read-only mount failed inside the lock, as a FileNotFoundError traceback
        config.out.mkdir(parents=True, exist_ok=True)
        if not os.access(config.out, os.W_OK | os.X_OK):
            raise PermissionError(f"[Errno {errno.EACCES}] no write permission")
    except OSError as exc:
        raise ConfigError(f"out: cannot create or write {config.out} ({exc.strerror or exc})") from None


def check_refresh_allowed(config: CorpusConfig, store: StateStore, state: State | None) -> None:
    """A refresh extends what the state store describes; refuse when that would mix incompatible batches."""
    from pipelines.publish.publish import latest_version

    if state is None:
        if latest_version(config.out) is not None:
            raise StateError(
                f"{config.out} has published versions but no state store ({store.state_file}); "
                "run `corpus run` once to rebuild it, then refresh"
            )
        return
    latest = latest_version(config.out)
    if latest != state.version:  # `latest` moved by hand (a rollback): the state describes another version
        raise StateError(
            f"{store.state_file} describes {state.version} but {Path(config.out) / 'latest'} points at {latest}; "
            f"a refresh would build on {state.version}'s documents. Point `latest` back at {state.version}, or "
            "run `corpus run` to rebuild from the inputs"
        )
    if isinstance(state.scoring, dict):
        changed = changed_scoring(state.scoring, config)
        if changed:
            raise StateError(
                f"settings that shape scored documents changed since {state.version} ({'; '.join(changed)}): a "
                "refresh would mix documents curated two ways. Run `corpus run` for a full rebuild, or restore them"
            )


# -- logging --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def run_log(work: Path, mode: str) -> Iterator[Path]:
    """Also write this process's log to `<work>/logs/<mode>.log` (ranks log to their stage's `logs/`)."""
    path = Path(work) / "logs" / f"{mode}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = logger.add(path, level="INFO", enqueue=False, backtrace=False, diagnose=False)
    try:
        yield path
    except Exception as exc:
        # the traceback goes to the log file only (stderr gets the one-line message from the command), and
        # the error carries the log's path for that message
        logger.bind(file_only=True).opt(exception=exc).error(f"{mode} failed: {type(exc).__name__}")
        exc.add_note(f"traceback: {path}")
        raise
    finally:
        with contextlib.suppress(ValueError):
            logger.remove(sink)


# -- synthetic top-up -----------------------------------------------------------------------------------------
def carry_dialogues(out: Path, midtrain: Path) -> int:
    """Copy `latest`'s accepted dialogues into the staged `midtrain/` (as `carry-*`); return their rows.

    Copies, not links: a version's files stay independent of every other version's.
    """
    import pyarrow.parquet as pq

    from pipelines.publish.publish import latest_version, versions_dir

    latest = latest_version(out)
    source = versions_dir(out) / latest / "midtrain" if latest else None
    if source is None or not source.is_dir():
        return 0
    rows = 0
    midtrain.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.parquet")):
        if path.name.startswith("."):
            continue
        name = path.name if path.name.startswith("carry-") else f"carry-{latest}-{path.name}"
        target = midtrain / name
        if not (target.is_file() and target.stat().st_size == path.stat().st_size):
            copy_atomic(path, target)
        rows += pq.ParquetFile(target).metadata.num_rows
    return rows


def synthesize_step(ctx: RunContext, state: State | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full: attempt `synthetic.target` dialogues. Refresh: carry `latest`'s dialogues and attempt only what
    earlier runs of this corpus have not: `synthetic.target` minus the dialogues attempted so far.

    Attempted, not accepted: topping accepted dialogues up to the target would regenerate up to the whole
    target every night when the model's dialogues mostly fail validation (with the tiny default model, every
    one does). Raise `synthetic.target` to add more. Each top-up round uses seed + round number, so its
    scenarios are new ones rather than the first round's again. Returns (stage summary, the synthetic record
    for the state store).
    """
    from pipelines.synthesize import run_synthesize

    settings = ctx.config.synthetic
    previous = dict(state.synthetic) if (state is not None and ctx.mode == "refresh") else {}
    rounds, attempted = int(previous.get("rounds", 0)), int(previous.get("attempted", 0))
    carried = carry_dialogues(ctx.out, ctx.staging / "midtrain") if ctx.mode == "refresh" else 0
    shortfall = max(0, settings.target - max(carried, attempted))
    # `target` is what this run attempts (the stats' per-chunk estimates use it), `configured_target` the setting
    base = {"carried": carried, "configured_target": settings.target}
    if not settings.enabled or shortfall == 0:
        reason = "synthetic.enabled is false" if not settings.enabled else "target already attempted"
        summary = {
            "enabled": settings.enabled,
            "attempted": 0,
            "accepted": 0,
            "target": 0,
            "reason": reason,
            **base,
        }
    else:
        update = {"target": shortfall, "seed": settings.seed + rounds}
        sub = ctx.config.model_copy(update={"synthetic": settings.model_copy(update=update)})
        sub_ctx = RunContext(
            config=sub, client=ctx.client, run_id=ctx.run_id, results=ctx.results, mode=ctx.mode
        )
        summary = {**run_synthesize(sub_ctx), **base, "seed": settings.seed + rounds}
        # engine errors were not attempts at a dialogue (endpoint down, model missing): the next refresh retries
        made = int(summary.get("attempted", 0)) - int(summary.get("engine_errors", 0))
        rounds, attempted = rounds + 1, attempted + made
        failed = len(summary.get("chunks_failed") or {}) + len(summary.get("chunks_missing") or [])
        if summary.get("engine_errors") or failed:
            logger.warning(
                f"synthesize: {summary.get('engine_errors', 0)} engine error(s) (first: "
                f"{summary.get('first_engine_error')}), {failed} failed chunk(s); they do not count as attempted"
            )
    summary["added"] = int(summary.get("accepted", 0))
    summary["total"] = carried + summary["added"]
    return summary, {"rounds": rounds, "attempted": attempted}


# -- the graph ------------------------------------------------------------------------------------------------
def left_work(work: Path) -> bool:
    """Whether an earlier attempt of this run (same config and inputs) got as far as a stage.

    Why: the first log line says so ("resuming"), as the stages only report skipped ranks, and an attempt
    killed before any rank finished showed no sign of being resumed. `logs/` alone does not count: an attempt
    that failed at connect left only its log.
    """
    return work.is_dir() and any(p.is_dir() and p.name != "logs" for p in work.iterdir())


def run_graph(config: CorpusConfig, run_id: str | None = None, mode: str = "full") -> dict[str, Any]:
    """Run the graph in `mode` ("full" or "refresh") and return the run summary (see `run_summary`).

    Raises LockHeld when another run holds the output root, StateError when the state store cannot be
    extended, ConfigError on bad settings. A refresh with no new input returns `{"status": "nothing new"}`.
    """
    from pipelines.curate.inputs import describe_skipped, is_bad_input
    from pipelines.publish.lock import RunLock

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    started = time.time()
    preflight_all(config)
    store = StateStore(config.state_dir)
    with RunLock(store.lock_path, f"corpus {'run' if mode == 'full' else 'refresh'}"):
        fault_point("after_lock")
        recovered = recover(config, mode)
        state = store.load()
        seen, skipped = discover_inputs(config)
        if mode == "refresh":
            check_refresh_allowed(config, store, state)
            batch = {
                url: mark for url, mark in seen.items() if state is None or state.inputs.get(url) != mark
            }
        else:
            batch = seen
        if mode == "refresh" and not batch:
            if recovered:  # the interrupted run was this batch: report it as what this refresh published
                return {**recovered[-1], "seconds": round(time.time() - started, 1)}
            logger.info("refresh: nothing new")
            # no curate stage runs to report bad inputs: said here, or a nightly refresh never mentions them
            bad = [e for e in skipped if is_bad_input(e)]
            if bad:
                logger.warning(
                    f"refresh: {len(bad)} bad input file(s) skipped; first {describe_skipped(bad[0])}"
                )
            return nothing_new(config, state, started)
        run_id = run_id or batch_run_id(mode, config, batch)
        for summary in recovered:
            if summary["run_id"] == run_id:
                return {**summary, "seconds": round(time.time() - started, 1)}
        remove_abandoned(config, keep=run_id)
        ctx_work = config.work_dir / run_id
        resuming = left_work(ctx_work)
        with run_log(ctx_work, mode) as log_path:
            logger.info(
                f"{mode} {run_id}: {len(batch)} input(s) to curate"
                + (
                    f" ({len(seen) - len(batch)} already in {state.version})"
                    if state and mode == "refresh"
                    else ""
                )
                + ("; resuming an interrupted attempt (finished ranks are kept)" if resuming else "")
            )
            journal = _run_stages(config, mode, run_id, batch, state, store, skipped)
            return finish_run(config, ctx_work, journal, started=started, log_path=log_path)


def _run_stages(
    config: CorpusConfig,
    mode: str,
    run_id: str,
    batch: dict[str, dict[str, Any]],
    state: State | None,
    store: StateStore,
    skipped: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """curate -> dedup -> mix -> synthesize -> publish on the cluster; return the run's journal (published).

    `skipped` are the input files the listing skipped; the curate stage reports them."""
    from pipelines.curate.stage import run_curate
    from pipelines.dedup.stage import dedup_against_index, run_dedup
    from pipelines.mix.stage import mix_scored, run_mix
    from pipelines.publish.publish import publish_run

    with connect(config.cluster, shared=config.work_dir) as client:
        ctx = RunContext(config=config, client=client, run_id=run_id, mode=mode)
        logger.info(f"{mode} {run_id}: work folder {ctx.work}")
        previous_batches = store.shard_dirs(state) if mode == "refresh" else []
        # checked before hours of curation: a lost index (StateError) is found now, not after the curate stage
        index_dir = store.index_dir(state) if mode == "refresh" else None
        ctx.results["inputs"] = {
            "mode": mode,
            "new_inputs": len(batch),
            "previous_version": state.version if state else None,
            "previous_batches": len(previous_batches),
        }
        if config.synthetic.enabled and config.synthetic.target > 0:
            from pipelines.synthesize import task_resources

            try:  # the cluster's GPUs are known now: a tensor_parallel_size no worker can host fails here,
                task_resources(config.synthetic, client)  # not after hours of curate, dedup and mix
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        ctx.results["curate"] = run_curate(ctx, sorted(batch), skipped=skipped)
        fault_point("after_curate")
        if mode == "refresh":
            ctx.results["dedup"] = dedup_against_index(
                ctx, ctx.results["curate"]["output_dir"], index_dir=index_dir, stage="dedup"
            )
        else:
            ctx.results["dedup"] = run_dedup(ctx)
        fault_point("after_dedup")
        kept_dir = ctx.results["dedup"]["output_dir"]
        if mode == "refresh":
            ctx.results["mix"] = mix_scored(
                [*previous_batches, kept_dir], ctx.staging, list(config.profile), config.mix, client
            )
        else:
            ctx.results["mix"] = run_mix(ctx)
        fault_point("after_mix")
        ctx.results["synthesize"], synthetic_state = synthesize_step(ctx, state)
        fault_point("after_synthesize")
        commit = {
            "kept_dir": str(kept_dir),
            "staged_index": ctx.results["dedup"].get("index_dir"),
            "index_max_files": config.publish.index_max_files,
            "shard_batches_max": config.publish.shard_batches_max,
            "shard_file_mb": config.publish.shard_file_mb,
            "inputs": committed_inputs(batch, ctx.results["curate"]),
            "base_version": state.version if state else None,
            "scoring": scoring_identity(config),
            "synthetic": synthetic_state,
        }
        publish_run(ctx, commit)
    fault_point("after_publish")
    return read_journal(ctx.work)


def committed_inputs(batch: dict[str, dict[str, Any]], curate: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The batch's inputs to mark seen: not those that could not be opened (a permission or a mount fixed
    later changes no size, mtime or etag, so marked seen they would never be read)."""
    unreadable = set(curate.get("unreadable_inputs") or [])
    if unreadable:
        logger.warning(f"{len(unreadable)} input(s) could not be opened; the next refresh retries them")
    return {url: mark for url, mark in batch.items() if url not in unreadable}


# -- after publishing -----------------------------------------------------------------------------------------
def finish_run(
    config: CorpusConfig,
    work: Path,
    journal: dict[str, Any],
    started: float | None = None,
    log_path: Path | None = None,
    recovered: bool = False,
) -> dict[str, Any]:
    """Commit the state store, keep the work folder as `work/done/<run_id>-<version>`, apply retention."""
    from pipelines.publish.publish import apply_retention, finish_interrupted

    journal = finish_interrupted(config.out, work, journal)
    if journal["phase"] == "publishing":
        raise StateError(
            f"{work}: version {journal['version']} was not published yet; rerun to finish it", refusal=False
        )
    store = StateStore(config.state_dir)
    state = store.load()
    if journal["phase"] != "committed":
        state = _commit(store, journal)
        journal = {**journal, "phase": "committed"}
        write_journal(work, journal)
    store.sweep(state)
    done = config.work_dir / "done" / f"{journal['run_id']}-{journal['version']}"
    if Path(work).exists() and Path(work) != done:
        done.parent.mkdir(parents=True, exist_ok=True)
        if done.exists():  # an identical earlier folder name cannot happen (versions are unique); be safe
            done = done.with_name(f"{done.name}-{uuid.uuid4().hex[:6]}")
        os.rename(work, done)  # keeps the logs; the next identical `corpus run` starts a fresh version
    removed = apply_retention(config.out, config.publish.retention)
    prune_done(config.work_dir / "done", keep=config.publish.retention)
    # filed commits that could not finish: kept to inspect, never resumed
    prune_done(config.work_dir / "unrecoverable", keep=config.publish.retention)
    if log_path is not None:
        log_path = (
            done / Path(log_path).relative_to(work) if Path(log_path).is_relative_to(work) else log_path
        )
    return run_summary(
        journal,
        seconds=round(time.time() - started, 1) if started else None,
        removed=removed,
        work=done,
        log=log_path,
        recovered=recovered,
    )


def _commit(store: StateStore, journal: dict[str, Any]) -> State:
    from pipelines.publish.state import commit_state

    return commit_state(store, journal)


def recover(config: CorpusConfig, mode: str = "refresh") -> list[dict[str, Any]]:
    """Finish runs whose version went live before a crash (flip, commit, file the work folder); oldest first.

    Runs killed before their rename are not touched: rerunning the same command resumes them. A commit that
    cannot be finished (its kept shards deleted, the state store edited by hand) stops a refresh, which must
    not build on a state it cannot trust; a full run (`corpus run`, the remedy every such error names) rebuilds
    the state store anyway, so it files that work folder under `work/unrecoverable/` and goes on.
    """
    from pipelines.publish.publish import finish_interrupted, version_number

    pending = []
    work_dir = config.work_dir
    for path in sorted(work_dir.glob("*/journal.json")) if work_dir.is_dir() else []:
        work = path.parent
        if work.name == "done" or work.name.startswith("."):
            continue
        journal = finish_interrupted(config.out, work, read_journal(work))
        if journal["phase"] in ("published", "committed"):
            pending.append((version_number(journal["version"]), work, journal))
    summaries = []
    for _, work, journal in sorted(pending, key=lambda item: item[0]):
        with run_log(work, journal["mode"]) as log_path:
            logger.warning(f"recovering {work.name}: {journal['version']} is live; finishing its commit")
            try:
                summaries.append(finish_run(config, work, journal, log_path=log_path, recovered=True))
            except StateError as exc:
                if mode != "full":
                    raise
                filed = work_dir / "unrecoverable" / work.name
                filed.parent.mkdir(parents=True, exist_ok=True)
                os.rename(work, filed)
                logger.warning(
                    f"{exc}; the full run rebuilds the state store: {work.name} filed under {filed}"
                )
    return summaries


def remove_abandoned(config: CorpusConfig, keep: str) -> list[str]:
    """Delete refresh work folders of input batches that will never be resumed (their key no longer occurs).

    A refresh folder is keyed by its new inputs; once the state store or the input listing moved on, no future
    refresh computes that key again. Full-run folders are kept (a rerun with the same config resumes them)."""
    removed = []
    work_dir = config.work_dir
    for work in sorted(work_dir.glob("refresh-*")) if work_dir.is_dir() else []:
        if work.name == keep or not work.is_dir():
            continue
        journal = read_journal(work)
        if journal is not None and journal.get("phase") != "publishing":
            continue  # live version: recover() owns it
        trash = work_dir / f".trash-{work.name}-{uuid.uuid4().hex[:6]}"
        os.rename(work, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(work.name)
    for leftover in work_dir.glob(".trash-*") if work_dir.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    if removed:
        logger.info(f"removed abandoned refresh work folders: {', '.join(removed)}")
    # Unfinished full runs of other settings are never deleted (days of curation may be resumable), but they
    # can hold a copy of the corpus each, so every run says they are there.
    stale = [w.name for w in sorted(work_dir.glob("run-*")) if w.name != keep] if work_dir.is_dir() else []
    if stale:
        logger.warning(
            f"unfinished full runs in {work_dir}: {', '.join(stale)}. `corpus run` with their settings resumes "
            "them; delete the folders if they are not wanted (each can hold a copy of the corpus)"
        )
    return removed


def prune_done(done_dir: Path, keep: int) -> list[str]:
    """Keep the work folders (logs, intermediates) of the last `keep` finished runs."""
    if not done_dir.is_dir():
        return []
    folders = sorted((p for p in done_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    removed = []
    for folder in folders[: max(len(folders) - keep, 0)]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


# -- summaries ------------------------------------------------------------------------------------------------
def run_summary(
    journal: dict[str, Any],
    seconds: float | None = None,
    removed: list[str] | None = None,
    work: Path | None = None,
    log: Path | None = None,
    recovered: bool = False,
) -> dict[str, Any]:
    """The JSON summary of a published run: what was new, documents in and out, tiers, dialogues, version."""
    results = journal.get("results") or {}
    curate, dedup = results.get("curate") or {}, results.get("dedup") or {}
    mix, synth = results.get("mix") or {}, results.get("synthesize") or {}
    inputs = sorted((journal.get("commit") or {}).get("inputs") or {})
    profiles = mix.get("profiles") or {}
    # the journal is saved with sorted keys, so the first profile is not the primary one ('civic' < 'default')
    primary = next((p for p in profiles.values() if p.get("primary")), next(iter(profiles.values()), {}))
    kept = dedup.get("documents_out", curate.get("documents_out"))
    return {
        "status": "published",
        "mode": journal.get("mode"),
        "version": journal.get("version"),
        "run_id": journal.get("run_id"),
        "recovered": recovered,
        "new_shards": len(inputs),
        "new_inputs": inputs[:NEW_INPUTS_LISTED],
        "documents_in": curate.get("documents_in"),
        "unreadable_inputs": (curate.get("unreadable_inputs") or [])[:NEW_INPUTS_LISTED],
        "unreadable_count": len(curate.get("unreadable_inputs") or []),
        "skipped_inputs": (curate.get("skipped_files") or [])[:NEW_INPUTS_LISTED],
        "skipped_count": sum((curate.get("skipped_by_reason") or {}).values()),
        "documents_curated": curate.get("documents_out"),
        "near_duplicates_removed": dedup.get("removed", 0),
        "documents_out": kept,
        "documents_total": mix.get("documents_in"),
        "mixture_rows": primary.get("rows"),
        "tiers": primary.get("tiers", {}),
        "profiles": {
            # feasible: false when the token budget or top-tier share could not be met (mixture.json says why)
            name: {"rows": p.get("rows"), "tiers": p.get("tiers"), "feasible": p.get("feasible")}
            for name, p in profiles.items()
        },
        "dialogues_added": synth.get("added", synth.get("accepted", 0)),
        "dialogues_carried": synth.get("carried", 0),
        "dialogues_total": synth.get("total", synth.get("accepted", 0)),
        # requests that failed in the engine are not attempts (the next refresh retries them)
        "dialogues_attempted": synth.get("attempted", 0) - synth.get("engine_errors", 0),
        # not 0 means the synthetic stage did not do its work (endpoint down, model missing, tasks crashed)
        "dialogues_engine_errors": synth.get("engine_errors", 0),
        "dialogue_chunks_failed": len(synth.get("chunks_failed") or {})
        + len(synth.get("chunks_missing") or [])
        + len(synth.get("chunks_incomplete") or []),
        "retention_removed": removed or [],
        "seconds": seconds,
        "work": str(work) if work else None,
        "log": str(log) if log else None,
    }


def nothing_new(config: CorpusConfig, state: State | None, started: float) -> dict[str, Any]:
    from pipelines.publish.publish import latest_version

    return {
        "status": "nothing new",
        "mode": "refresh",
        "version": latest_version(config.out),
        "new_shards": 0,
        "inputs_seen": len(state.inputs) if state else 0,
        "documents_in": 0,
        "documents_out": 0,
        "dialogues_added": 0,
        "seconds": round(time.time() - started, 1),
    }
