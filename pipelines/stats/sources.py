"""Where a run's statistics come from: its Parquet outputs, datatrove logging dirs and stage ledgers.

A stage records three kinds of facts, and each is read where the stage left it:

* the **Parquet it wrote** (curate's scored shards and dedup's survivors under `work/<run>/<stage>/`, the
  mixture and dialogues in the staged version) - the source of every row, byte, token and score count;
* **datatrove logging dirs** (`stats.json` plus `stats/NNNNN.json` per rank) - per-step counters such as
  `dropped_<reason>`; per-rank files are merged with `PipelineStats.__add__`, exactly as datatrove's
  executors build `stats.json`;
* **stage summaries**: curate's per-rank ledgers (`documents_in`, `dropped` by reason), the mix stage's
  `mixture.json`, and the dict each stage function returned (`ctx.results[stage]`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger
from datatrove.utils.stats import MetricStats, MetricStatsDict, PipelineStats

RANK_FILE = re.compile(r"^(\d{5})\.json$")
# datatrove steps that drop without naming a reason: the reason their drops are reported under
STEP_REASONS = {"🎯 MinHash stage 4": "near_duplicate"}
LEDGER_KEYS = {"rank", "documents_in", "documents_out", "dropped"}


@dataclass(frozen=True)
class Dataset:
    """One folder of Parquet shards produced by a stage.

    `location` says what `path` columns are relative to: `version` (the published folder) or `work`
    (`OUT/work/<run_id>/`, kept as `OUT/work/done/<run_id>-<version>/` after the run).
    """

    stage: str
    dataset: str
    folder: Path
    location: str
    root: Path
    exclude_suffixes: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        """Complete shards (temp files start with '.'), sorted; sidecars such as `*.hashes.parquet` excluded."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p
            for p in self.folder.glob("*.parquet")
            if not p.name.startswith(".") and not any(p.name.endswith(s) for s in self.exclude_suffixes)
        )

    def relpath(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)


def slug(text: str) -> str:
    """'🖊 Gopher Quality' -> 'gopher_quality' (for reasons named after a step)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unnamed_step"


# -- datatrove logging dirs ---------------------------------------------------------------------------------
@dataclass
class LoggingDir:
    """A datatrove logging dir: `name` is its path under the stage folder ('.' for the stage folder itself)."""

    stage: str
    name: str
    path: Path

    def rank_stats(self) -> dict[int, PipelineStats]:
        """Each rank's PipelineStats from `stats/NNNNN.json` (ranks that never finished have none)."""
        out = {}
        folder = self.path / "stats"
        if folder.is_dir():
            for file in sorted(folder.iterdir()):
                match = RANK_FILE.match(file.name)
                if match:
                    try:
                        out[int(match.group(1))] = normalised(
                            PipelineStats.from_json(json.loads(file.read_text()))
                        )
                    except (ValueError, KeyError, TypeError) as exc:  # also undecodable bytes
                        # torn by a power cut (datatrove writes it in place); the executor left it out of
                        # stats.json too (DaskPipelineExecutor.merge_stats), so the shard shows as unaccounted
                        logger.warning(f"{file}: not a datatrove per-rank stats file ({exc}); left out")
        return out

    def merged(self) -> PipelineStats:
        """All ranks merged the way datatrove's executors merge them; falls back to `stats.json`."""
        ranks = self.rank_stats()
        if ranks:
            total = PipelineStats()
            for rank in sorted(ranks):
                total += ranks[rank]
            return total
        merged = self.path / "stats.json"
        if merged.is_file():
            return normalised(PipelineStats.from_json(json.loads(merged.read_text())))
        return PipelineStats()


def normalised(stats: PipelineStats) -> PipelineStats:
    """Counters as MetricStats objects (datatrove's `from_json` keeps the raw JSON values until a merge)."""
    for step in stats.stats:
        step.stats = MetricStatsDict(
            init={
                k: v if isinstance(v, MetricStats) else MetricStats.from_dict(v)
                for k, v in step.stats.items()
            }
        )
    return stats


def logging_dirs(stage: str, stage_dir: Path) -> list[LoggingDir]:
    """Every datatrove logging dir under a stage folder (a folder with `stats.json` or `stats/NNNNN.json`)."""
    if not stage_dir.is_dir():
        return []
    found = set()
    for marker in list(stage_dir.rglob("stats.json")) + list(stage_dir.rglob("executor.json")):
        found.add(marker.parent)
    for folder in stage_dir.rglob("stats"):
        if folder.is_dir() and any(RANK_FILE.match(p.name) for p in folder.iterdir()):
            found.add(folder.parent)
    dirs = []
    for folder in sorted(found):
        rel = folder.relative_to(stage_dir).as_posix()
        dirs.append(LoggingDir(stage, rel, folder))
    return dirs


def step_drops(stats: PipelineStats, default_reason: str | None = None) -> dict[str, int]:
    """Documents dropped by reason over the steps of one rank (or of merged ranks).

    datatrove filters count `dropped` and, when they know why, `dropped_<reason>` as well; drops without a
    reason are attributed to the step (its known reason, `default_reason`, or its slugified name).
    """
    reasons: dict[str, int] = {}
    for step in stats.stats:
        named = 0
        for key, metric in step.stats.items():
            if key.startswith("dropped_"):
                value = int(metric.total)
                reasons[key[len("dropped_") :]] = reasons.get(key[len("dropped_") :], 0) + value
                named += value
        total = step.stats.get("dropped")
        if total is not None and int(total.total) > named:
            reason = STEP_REASONS.get(step.name) or default_reason or slug(step.name)
            reasons[reason] = reasons.get(reason, 0) + int(total.total) - named
    return reasons


def step_counter(stats: PipelineStats, key: str) -> int:
    """Sum of one counter over every step (e.g. the reader's `documents`)."""
    return sum(int(step.stats[key].total) for step in stats.stats if key in step.stats)


def first_step_counter(stats: PipelineStats, key: str) -> int | None:
    """The counter of the first step that has it (documents read = the reader's `documents`)."""
    for step in stats.stats:
        if key in step.stats:
            return int(step.stats[key].total)
    return None


# -- stage ledgers ------------------------------------------------------------------------------------------
def find_ledgers(stage_dir: Path) -> dict[int, dict[str, Any]]:
    """Per-rank count ledgers (JSON objects with rank, documents_in/out and dropped) under a stage folder.

    Searched by shape rather than by path so a stage can move its ledger folder without breaking the stats;
    datatrove's own `stats/NNNNN.json` files are lists and never match.
    """
    ledgers: dict[int, dict[str, Any]] = {}
    if not stage_dir.is_dir():
        return ledgers
    for file in sorted(stage_dir.rglob("*.json")):
        if not RANK_FILE.match(file.name) or file.parent.name == "stats":
            continue
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and set(data) >= LEDGER_KEYS:
            ledgers[int(data["rank"])] = data
    return ledgers


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
