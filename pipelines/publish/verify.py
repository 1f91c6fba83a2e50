"""`corpus verify OUT[/versions/<id>]`: re-check a published version against its manifest.

Run it after copying a corpus between filesystems, or before a training job reads a version: it re-derives
sizes, sha256 and Parquet row counts from the files and compares them with `manifest.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.publish.manifest import MANIFEST, VerifyError, verify_version
from pipelines.publish.publish import latest_version, list_versions, versions_dir


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
    latest = latest_version(path)
    if latest is None:
        raise VerifyError(f"{path}: nothing published yet (no `latest`)")
    return [versions_dir(path) / latest]


def main(args: argparse.Namespace) -> int:
    try:
        for version in targets(Path(args.path), args.all):
            manifest = verify_version(version, check_hashes=not args.quick)
            rows = manifest.get("totals", {}).get("rows", {})
            print(f"ok {version}: {len(manifest['files'])} files, rows {rows}")
    except VerifyError as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1
    return 0
