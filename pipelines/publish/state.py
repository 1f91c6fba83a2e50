"""The state store of an output root: what `corpus refresh` remembers between runs.

```
OUT/state/
  state.json                  # the commit point: seen inputs, kept batches, index generation, version
  shards/<batch>/*.parquet    # kept (deduplicated) scored documents of each batch; immutable (more than
                              # publish.shard_batches_max batches are folded into one, shard_compaction.py)
  minhash/<generation>/       # MinHash index of every published document (datatrove's index layout;
                              # a bucket of more than publish.index_max_files files is merged into one)
  run.lock                    # RunLock of the running `corpus run` / `corpus refresh`
```

Why this shape: a refresh needs, for the corpus that `latest` serves, (1) which inputs it already read, (2) the
scored documents it kept, to re-mix them with the new ones, and (3) their MinHash index, to drop new
near-duplicates of published documents. All three must change together and only after the version built from
them is published. Shard batches and index generations are written under new names first (hard links to the
run's kept shards; hard links to the previous generation plus the new index files), and `state.json`, replaced
atomically, is the one switch that makes them current; whatever it does not name is garbage from an interrupted
commit and is swept afterwards. Each step checks whether it already happened, so a run killed anywhere in the
commit is finished by the next run (`recover`), which reads what to do from the run's journal in its work folder.

The store lives under `OUT/`, on the same filesystem as `versions/` and `work/`: moves are renames and copies are
hard links (plain copies where a filesystem has none).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger

from pipelines.atomic import commit_dir, link_or_copy, write_json_atomic
from pipelines.publish.faults import fault_point

STATE_FORMAT = 1
STATE_FILE = "state.json"
JOURNAL = "journal.json"


class StateError(RuntimeError):
    """The state store or a run journal is inconsistent; the message names the file and what to do.

    `refusal`: a person has to decide (restore a setting, the `latest` link or lost files, or run `corpus run`);
    rerunning alone will not help, so the command exits 78 and schedulers can tell it from a failure (1).
    """

    def __init__(self, message: str, refusal: bool = True):
        super().__init__(message)
        self.refusal = refusal


@dataclass
class State:
    """Contents of `state.json` (see the module docstring)."""

    version: str | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> {size, modified, etag}
    batches: list[str] = field(default_factory=list)
    index: str | None = None
    scoring: str | None = None  # hash of the settings that shape scored documents (see graph.scoring_hash)
    synthetic: dict[str, Any] = field(default_factory=lambda: {"rounds": 0, "attempted": 0})
    run_id: str | None = None
    updated: str | None = None
    format: int = STATE_FORMAT


def input_mark(size: int, modified: str | None, etag: str | None) -> dict[str, Any]:
    """What identifies one version of an input file: a change of any of these makes it new again."""
    return {"size": int(size), "modified": modified, "etag": etag}


def _save_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data, indent=1, sort_keys=True, default=str)


class StateStore:
    """`OUT/state/`: load and save `state.json`, resolve batch and index folders, sweep garbage."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def shards_root(self) -> Path:
        return self.root / "shards"

    @property
    def index_root(self) -> Path:
        return self.root / "minhash"

    @property
    def lock_path(self) -> Path:
        return self.root / "run.lock"

    def load(self) -> State | None:
        """The committed state, or None before the first commit."""
        if not self.state_file.is_file():
            return None
        try:
            data = json.loads(self.state_file.read_text())
        except json.JSONDecodeError as exc:
            raise StateError(
                f"{self.state_file}: not valid JSON ({exc}); restore it or run `corpus run`"
            ) from None
        if data.get("format") != STATE_FORMAT:
            raise StateError(f"{self.state_file}: format {data.get('format')!r}, expected {STATE_FORMAT}")
        known = State.__dataclass_fields__
        return State(**{k: v for k, v in data.items() if k in known})

    def save(self, state: State) -> None:
        state.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _save_json(self.state_file, asdict(state))

    def shard_dirs(self, state: State | None) -> list[Path]:
        """The kept scored-document folders of every committed batch, oldest first."""
        if state is None:
            return []
        dirs = [self.shards_root / b for b in state.batches]
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise StateError(
                f"{self.state_file}: batch folder(s) missing: {missing}; run `corpus run` to rebuild"
            )
        return dirs

    def index_dir(self, state: State | None) -> Path | None:
        if state is None or not state.index:
            return None
        folder = self.index_root / state.index
        if not folder.is_dir():  # refreshing without it would let near-duplicates of the corpus back in
            raise StateError(
                f"{self.state_file}: MinHash index generation {folder} is missing; run `corpus run` to rebuild"
            )
        return folder

    def sweep(self, state: State) -> list[str]:
        """Delete batch folders and index generations that `state` does not name (interrupted commits, resets)."""
        keep = {
            self.shards_root: set(state.batches),
            self.index_root: {state.index} if state.index else set(),
        }
        removed = []
        for folder, names in keep.items():
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.name in names:
                    continue
                trash = folder / f".trash-{entry.name}-{uuid.uuid4().hex[:6]}"
                if not entry.name.startswith(".trash-"):
                    os.rename(entry, trash)
                else:
                    trash = entry
                _remove(trash)
                removed.append(f"{folder.name}/{entry.name}")
        if removed:
            logger.info(f"state: swept {', '.join(removed)}")
        return removed


# -- journal of one run (in its work folder) ------------------------------------------------------------------
def read_journal(work: Path) -> dict[str, Any] | None:
    path = Path(work) / JOURNAL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: run journal is not valid JSON ({exc})") from None


def write_journal(work: Path, journal: dict[str, Any]) -> None:
    _save_json(Path(work) / JOURNAL, journal)


# -- commit ------------------------------------------------------------------------------------------------
def link_tree(src: Path, dst: Path) -> int:
    """Hard-link every file of `src` into `dst` (copy where links are not possible); return files linked.

    Index files are never modified in place (datatrove writes them once; commit_index adds new ones), so
    a new generation can share the old one's files.
    """
    n = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        link_or_copy(path, target)
        n += 1
    return n


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _add_batch(store: StateStore, batch: str, kept_dir: str | None) -> None:
    """`shards/<batch>/` = hard links to the run's kept shards (its work folder keeps its own names for them)."""
    target = store.shards_root / batch
    if target.is_dir():
        return
    source = Path(kept_dir) if kept_dir else None
    if source is None or not source.is_dir():
        raise StateError(
            f"cannot commit batch {batch}: its kept shards {kept_dir} are gone and {target} does not exist; "
            "run `corpus run` to rebuild the state store"
        )
    tmp = store.shards_root / f".{batch}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    for path in sorted(source.glob("*.parquet")):
        if not path.name.startswith("."):  # temp files of a crashed writer are not documents
            link_or_copy(path, tmp / path.name)
    commit_dir(tmp, target)


def fold_if_needed(store: StateStore, state: State, max_batches: int | None, file_mb: int | None) -> State:
    """`state`, or the same state with its kept-shard batches folded into one when it names more than
    `max_batches` (pipelines.publish.shard_compaction); saved again as the second switch.

    Only the batches written with the newest batch's schema are folded (a batch from before an upgrade that
    changed the columns stays as it is). Folding only saves reads, so a failure (a full disk, a damaged file)
    keeps the batches and is logged; the next commit tries again. Run after `state.json` names the new batch:
    a crash during the fold leaves a committed state and a temp folder the sweep removes, and the next run's
    recovery, which calls `commit_state` again, folds then. A fold renamed into place before a crash is reused.
    """
    import pyarrow.parquet as pq

    from pipelines.parquet import parquet_paths
    from pipelines.publish.shard_compaction import fold_batches

    if not max_batches or len(state.batches) <= max_batches:
        return state
    name = f"{state.batches[-1]}-folded"
    try:
        schemas = {}
        for batch in state.batches:
            files = parquet_paths(store.shards_root / batch)
            schemas[batch] = pq.read_schema(files[0]).remove_metadata() if files else None
        newest = schemas[state.batches[-1]]
        foldable = [b for b in state.batches if schemas[b] is not None and schemas[b].equals(newest)]
        if len(foldable) < 2:
            return state
        if not (store.shards_root / name).is_dir():
            sources = [store.shards_root / b for b in foldable]
            files = fold_batches(sources, store.shards_root / name, int(file_mb or 256) << 20)
            if files is None:
                return state
            logger.info(f"state: folded {len(foldable)} kept-shard batches into {name} ({files} file(s))")
    except Exception as exc:  # any failure leaves the committed state as it is
        logger.warning(
            f"state: kept-shard batches not folded ({type(exc).__name__}: {exc}); next commit retries"
        )
        return state
    folded = State(**{**asdict(state), "batches": [b for b in state.batches if b not in foldable] + [name]})
    store.save(folded)
    return folded


def _build_index(
    store: StateStore, generation: str, base: Path | None, staged: str | None, max_files: int | None
) -> None:
    """`minhash/<generation>/` = the base generation's files (hard links) + the staged index of this batch,
    with every bucket of more than `max_files` files merged into one (pipelines.dedup.compact)."""
    from pipelines.dedup.compact import compact_index
    from pipelines.dedup.stage import INDEX_SUFFIX, DedupError, commit_index

    target = store.index_root / generation
    if target.is_dir():
        return
    tmp = store.index_root / f".{generation}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    if base is not None and base.is_dir():
        link_tree(base, tmp)
    if staged:
        # Index file names come from the batch's scored file names and sizes, which can repeat across batches
        # (and commit_index skips a same-named, same-sized file); prefixing the generation keeps every batch's
        # files. datatrove loads every file of a bucket folder, whatever its name.
        files = sorted(Path(staged).glob(f"bucket_*/*{INDEX_SUFFIX}"))
        if files:
            renamed = store.index_root / f".{generation}.staged-{uuid.uuid4().hex[:6]}"
            for path in files:
                (renamed / path.parent.name).mkdir(parents=True, exist_ok=True)
                link_or_copy(path, renamed / path.parent.name / f"{generation}--{path.name}")
            for path in Path(staged).glob("*.json"):  # index_config.json: commit_index checks it matches
                shutil.copyfile(path, renamed / path.name)
            commit_index(renamed, tmp)
            shutil.rmtree(renamed, ignore_errors=True)
    if max_files:
        try:
            compact_index(tmp, max_files, name=generation)
        except DedupError as exc:  # a damaged index file: `recover` must let `corpus run` rebuild
            raise StateError(f"cannot build MinHash index generation {generation}: {exc}") from None
    commit_dir(tmp, target)


def commit_state(store: StateStore, journal: dict[str, Any]) -> State:
    """Make the published batch of `journal` the store's current state (idempotent; see module docstring),
    then fold the kept-shard batches if there are too many (a second switch: see `fold_if_needed`)."""
    commit = journal["commit"]
    return fold_if_needed(
        store, _commit_batch(store, journal), commit.get("shard_batches_max"), commit.get("shard_file_mb")
    )


def _commit_batch(store: StateStore, journal: dict[str, Any]) -> State:
    commit, version, mode = journal["commit"], journal["version"], journal["mode"]
    current = store.load()
    if current is not None and current.version == version and current.run_id == journal["run_id"]:
        return current  # already committed (a version id alone can repeat if versions were deleted by hand)
    base_version = commit.get("base_version")
    if mode == "refresh" and (current.version if current else None) != base_version:
        raise StateError(
            f"{store.state_file}: holds version {current.version if current else None}, but run "
            f"{journal['run_id']} was built on {base_version}; run `corpus run` to rebuild the state store"
        )
    batch = f"{journal['run_id']}-{version}"
    _add_batch(store, batch, commit.get("kept_dir"))
    fault_point("commit_after_shards")
    if commit.get("staged_index"):
        base = store.index_dir(current) if mode == "refresh" else None
        generation = batch
        _build_index(store, generation, base, commit["staged_index"], commit.get("index_max_files"))
    else:
        generation = current.index if (mode == "refresh" and current) else None
    fault_point("commit_after_index")
    inputs = dict(current.inputs) if (mode == "refresh" and current) else {}
    inputs.update(commit["inputs"])
    state = State(
        version=version,
        inputs=inputs,
        batches=[*(current.batches if (mode == "refresh" and current) else []), batch],
        index=generation,
        scoring=commit.get("scoring"),
        synthetic=commit.get("synthetic") or {"rounds": 0, "attempted": 0},
        run_id=journal["run_id"],
    )
    store.save(state)
    fault_point("commit_after_state")
    logger.info(
        f"state: committed {version} ({mode}): {len(state.batches)} batch(es), {len(state.inputs)} inputs seen"
    )
    return state
