"""`corpus verify OUT[/versions/<id>]`: re-check a published version against its manifest.

Run it after copying a corpus between filesystems, or before a training job reads a version: it re-derives
sizes, sha256 and Parquet row counts from the files and compares them with `manifest.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.publish.manifest import MANIFEST, VerifyError, verify_version
from pipelines.publish.publish import dangling_latest, latest_version, list_versions, versions_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="an output root (checks `latest`) or a version folder")
    parser.add_argument("--all", action="store_true", help="with an output root: check every version")
    parser.add_argument("--quick", action="store_true", help="skip sha256 (sizes and row counts only)")


def targets(path: Path, every: bool) -> list[Path]:
    if (path / MANIFEST).is_file():
        return [path]
    if not versions_dir(path).is_dir():
        raise VerifyError(
            f"{path}: neither a version folder (no {MANIFEST}) nor an output root (no versions/)"
        )
    if every:
        return [versions_dir(path) / v for v in list_versions(path)]
    problem = latest_problem(path)
    if problem:
        raise VerifyError(problem)
    return [versions_dir(path) / str(latest_version(path))]


def latest_problem(path: Path) -> str | None:
    """Why readers of `OUT/latest` would find nothing (dangling or missing), else None.

    `--all` checks it too: it passed an OUT whose first publish had been killed (versions/ empty, or a complete
    version that `latest` did not point at yet), so a health check on `verify --all` called it healthy.
    """
    dangling = dangling_latest(path)
    if dangling:
        return dangling
    link = path / "latest"
    if link.exists() and not link.is_symlink():  # a copy that followed symlinks, or a hand-made folder
        return f"{link} is not a symlink to a version (copy OUT with symlinks kept, e.g. `cp -a`, `rsync -a`)"
    if latest_version(path) is None:
        return f"{path}: nothing published yet (no `latest`)"
    return None


def main(args: argparse.Namespace) -> int:
    """Check every target and print one line per version; exit 1 when any failed (all are still checked)."""
    path = Path(args.path)
    try:
        versions = targets(path, args.all)
    except VerifyError as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1
    failed = 0
    if args.all and not (path / MANIFEST).is_file():
        problem = latest_problem(path)
        if problem:  # readers of `latest` would find nothing, whatever the versions say
            print(f"verify failed: {problem}", file=sys.stderr)
            failed += 1
    for version in versions:
        try:
            manifest = verify_version(version, check_hashes=not args.quick)
        except VerifyError as exc:
            print(f"verify failed: {exc}", file=sys.stderr)
            failed += 1
            continue
        totals = manifest.get("totals")
        rows = totals.get("rows", {}) if isinstance(totals, dict) else {}
        print(f"ok {version}: {len(manifest['files'])} files, rows {rows}")
    if failed and len(versions) > 1:
        print(f"verify failed: {failed} problem(s) over {len(versions)} version(s)", file=sys.stderr)
    return 1 if failed else 0
