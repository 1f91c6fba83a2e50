"""Publish a staged version: manifest, verify, rename into `versions/<id>`, flip `latest` atomically.

Readers only ever see complete versions. The staged folder lives under `OUT/work/` on the same filesystem,
so moving it into `OUT/versions/` is a single rename; `latest` is a relative symlink replaced with
`os.replace`, which is atomic on POSIX.

A run writes its intent (`journal.json`, phase `publishing`, with the version id and what to commit to the state
store afterwards) before the rename, so every crash has a defined repair:
- before the rename: the staging folder is still there; the rerun rebuilds stats and manifest and publishes;
- between the rename and the flip: `versions/<id>` is complete and verified but `latest` still points at the
  previous version; `finish_interrupted` flips it (the version was verified before it was renamed);
- after the flip: only the journal's phase and the state commit are left, and both are idempotent.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger

from pipelines.atomic import commit_dir, fsync_dir
from pipelines.context import RunContext
from pipelines.publish.faults import fault_point
from pipelines.publish.manifest import code_version, verify_version, write_manifest
from pipelines.publish.state import read_journal, write_journal

VERSION_RE = re.compile(r"^v(\d+)$")


def versions_dir(out: Path) -> Path:
    return Path(out) / "versions"


def version_number(version: str | None) -> int:
    match = VERSION_RE.match(version or "")
    return int(match.group(1)) if match else 0


def list_versions(out: Path) -> list[str]:
    """Published version ids, oldest first (temporary and half-moved folders are not versions)."""
    folder = versions_dir(out)
    if not folder.is_dir():
        return []
    ids = [p.name for p in folder.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
    return sorted(ids, key=version_number)


def latest_version(out: Path) -> str | None:
    """The id `OUT/latest` points at, or None when nothing was published yet."""
    link = Path(out) / "latest"
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def dangling_latest(out: Path) -> str | None:
    """A message when `OUT/latest` is a symlink to a folder that is gone (deleted by hand, a bad copy)."""
    link = Path(out) / "latest"
    if link.is_symlink() and not link.resolve().is_dir():
        return f"{link} points at {os.readlink(link)}, which does not exist"
    return None


def next_version_id(out: Path) -> str:
    numbers = [version_number(v) for v in list_versions(out)]
    return f"v{max(numbers, default=0) + 1}"


def flip_latest(out: Path, version: str) -> None:
    """Point `OUT/latest` at `versions/<version>` with one atomic rename of a fresh symlink."""
    out = Path(out)
    tmp = out / f".latest.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"versions/{version}", tmp)
    os.replace(tmp, out / "latest")
    fsync_dir(out)


def purge_temp_entries(root: Path) -> list[str]:
    """Remove `.name` entries (temp files and folders of writers killed mid-write) before describing a version.

    By the project's convention every writer writes `.<name>.tmp-*` and renames, so a dot entry is never part
    of a version; left in place it would be listed in the manifest and published.
    """
    removed = []
    for path in sorted(root.rglob(".*"), key=lambda p: -len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.relative_to(root).as_posix())
    if removed:
        logger.warning(f"{root}: removed temp entries of an interrupted writer: {removed[:10]}")
    return removed


def publish_folder(out: Path, staging: Path, meta: dict[str, Any], version: str | None = None) -> str:
    """Manifest + verify `staging`, rename it to `versions/<version>` (default: the next id), flip `latest`."""
    out = Path(out)
    versions_dir(out).mkdir(parents=True, exist_ok=True)
    version = version or next_version_id(out)
    target = versions_dir(out) / version
    if target.exists():
        raise FileExistsError(f"{target} already exists; versions are immutable")
    meta = {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent": latest_version(out),
        "code": code_version(),
        **meta,
    }
    purge_temp_entries(staging)
    write_manifest(staging, meta)
    # the structure (file set, sizes, Parquet footers and row counts), not the sha256 again: write_manifest has
    # just hashed these bytes, and a second pass doubled publish's serial reads (hours for a 10 TB mixture);
    # `corpus verify` re-hashes whenever users ask
    verify_version(staging, check_hashes=False)
    fault_point("publish_before_rename")
    commit_dir(
        staging, target
    )  # synced, then one rename on the same filesystem, never onto an existing version
    fault_point("publish_after_rename")
    flip_latest(out, version)
    fault_point("publish_after_flip")
    logger.success(f"published {target} (latest -> {version})")
    return version


def finish_interrupted(out: Path, work: Path, journal: dict[str, Any]) -> dict[str, Any]:
    """Complete a publish that was killed after its intent was written; return the (updated) journal.

    Phase `publishing` with `versions/<id>` in place and the staging folder gone means the rename happened:
    flip `latest` (unless it already points at this or a newer version). With the staging folder still there,
    the rename did not happen; the caller reruns the stages (they resume) and publishes again.
    """
    if journal.get("phase") != "publishing":
        return journal
    version = journal["version"]
    staged = Path(work) / "version"
    if (versions_dir(out) / version).is_dir() and not staged.exists():
        if version_number(latest_version(out)) < version_number(version):
            flip_latest(out, version)
            logger.warning(f"finished interrupted publish of {version} (latest -> {version})")
        journal = {**journal, "phase": "published"}
        write_journal(work, journal)
    return journal


def publish_run(ctx: RunContext, commit: dict[str, Any] | None = None) -> str:
    """Publish what the stages staged for this run; journal the intent and what to commit afterwards.

    `commit` is what `pipelines.publish.state.commit_state` needs once the version is live (kept shards, staged
    index, inputs, ...). Returns the version id.
    """
    from pipelines.graph import config_hash
    from pipelines.stats.card import write_card
    from pipelines.stats.tables import write_stats

    journal = read_journal(ctx.work)
    if journal is not None:
        journal = finish_interrupted(ctx.out, ctx.work, journal)
        if journal["phase"] in ("published", "committed"):
            return journal["version"]
    ctx.staging.mkdir(parents=True, exist_ok=True)
    version = next_version_id(ctx.out)
    # stats/ and the card go into the manifest like the data; they name the version this publish creates
    ctx.results["stats"] = write_stats(ctx, version)
    write_card(ctx, version)
    results = _jsonable(ctx.results)
    meta = {
        "run_id": ctx.run_id,
        "mode": ctx.mode,
        "config_hash": config_hash(ctx.config),
        "config": ctx.config.model_dump(mode="json"),
        "results": results,
    }
    journal = {
        "phase": "publishing",
        "version": version,
        "run_id": ctx.run_id,
        "mode": ctx.mode,
        "commit": commit or {},
        "results": results,
    }
    write_journal(ctx.work, journal)
    publish_folder(ctx.out, ctx.staging, meta, version=version)
    write_journal(ctx.work, {**journal, "phase": "published"})
    return version


def _jsonable(data: Any) -> Any:
    import json

    return json.loads(json.dumps(data, default=str))


def apply_retention(out: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond `keep`, never the one `latest` points at; return what was removed.

    A version is first renamed out of the `v<N>` namespace, then deleted, so a crash mid-delete never leaves
    a half-deleted folder that looks like a version.
    """
    versions = list_versions(out)
    current = latest_version(out)
    removable = [v for v in versions if v != current]
    excess = len(versions) - keep
    removed = []
    for version in removable[: max(excess, 0)]:
        trash = versions_dir(out) / f".trash-{version}-{os.getpid()}"
        os.rename(versions_dir(out) / version, trash)
        # the version is already out of the namespace; a busy file (NFS .nfsXXXX, EBUSY) must not fail a run
        # that has published: the next retention sweeps what is left
        shutil.rmtree(
            trash, onerror=lambda _f, path, exc: logger.warning(f"retention: {path} kept ({exc[1]})")
        )
        removed.append(version)
    for leftover in versions_dir(out).glob(".trash-*"):  # from a crash during an earlier retention
        shutil.rmtree(leftover, ignore_errors=True)
    if removed:
        logger.info(f"retention (keep {keep}): removed {', '.join(removed)}")
    return removed
