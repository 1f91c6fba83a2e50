"""Publish a staged version: manifest, verify, rename into `versions/<id>`, flip `latest` atomically.

Readers only ever see complete versions. The staged folder lives under `OUT/work/` on the same filesystem,
so moving it into `OUT/versions/` is a single rename; `latest` is a relative symlink replaced with
`os.replace`, which is atomic on POSIX. A crash before the rename leaves the staging folder for the next run
to finish; a crash between the rename and the flip leaves a complete, verifiable version that `latest` does
not point at yet, and the next publish simply moves past it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from datatrove.utils.logging import logger

from pipelines.context import RunContext
from pipelines.publish.manifest import code_version, verify_version, write_manifest

VERSION_RE = re.compile(r"^v(\d+)$")


def versions_dir(out: Path) -> Path:
    return Path(out) / "versions"


def list_versions(out: Path) -> list[str]:
    """Published version ids, oldest first (temporary and half-moved folders are not versions)."""
    folder = versions_dir(out)
    if not folder.is_dir():
        return []
    ids = [p.name for p in folder.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
    return sorted(ids, key=lambda v: int(VERSION_RE.match(v).group(1)))


def latest_version(out: Path) -> str | None:
    """The id `OUT/latest` points at, or None when nothing was published yet."""
    link = Path(out) / "latest"
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def next_version_id(out: Path) -> str:
    numbers = [int(VERSION_RE.match(v).group(1)) for v in list_versions(out)]
    return f"v{max(numbers, default=0) + 1}"


def flip_latest(out: Path, version: str) -> None:
    """Point `OUT/latest` at `versions/<version>` with one atomic rename of a fresh symlink."""
    out = Path(out)
    tmp = out / f".latest.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"versions/{version}", tmp)
    os.replace(tmp, out / "latest")


def publish_folder(out: Path, staging: Path, meta: dict[str, Any]) -> str:
    """Manifest + verify `staging`, rename it to the next `versions/<id>`, flip `latest`; return the id."""
    out = Path(out)
    versions_dir(out).mkdir(parents=True, exist_ok=True)
    version = next_version_id(out)
    meta = {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parent": latest_version(out),
        "code": code_version(),
        **meta,
    }
    write_manifest(staging, meta)
    verify_version(staging)
    target = versions_dir(out) / version
    os.rename(staging, target)  # same filesystem: atomic, and never onto an existing version
    flip_latest(out, version)
    logger.success(f"published {target} (latest -> {version})")
    return version


def publish_run(ctx: RunContext) -> str:
    """Publish what the stages staged for this run and record the version in the run's work folder."""
    from pipelines.graph import config_hash

    done_marker = ctx.work / "published.json"
    if done_marker.is_file():  # a rerun after a crash between publishing and cleanup
        return json.loads(done_marker.read_text())["version"]
    ctx.staging.mkdir(parents=True, exist_ok=True)
    meta = {
        "run_id": ctx.run_id,
        "config_hash": config_hash(ctx.config),
        "config": ctx.config.model_dump(mode="json"),
        "results": ctx.results,
    }
    version = publish_folder(ctx.out, ctx.staging, meta)
    done_marker.write_text(json.dumps({"version": version}))
    return version

