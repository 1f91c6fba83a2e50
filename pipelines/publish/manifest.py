"""The manifest of a version: every file with its rows, bytes and sha256, plus what produced them.

Readers trust a version because `corpus verify` can re-derive every number here from the files; publishing
refuses to rename a staged version into place unless that check passes first.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.atomic import write_json_atomic

MANIFEST = "manifest.json"


class VerifyError(RuntimeError):
    """A version does not match its manifest; the message lists each mismatch."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parquet_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def describe_files(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` except the manifest itself, sorted, with rows for Parquet files."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(root).as_posix()
        entry: dict[str, Any] = {"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        if path.suffix == ".parquet":
            entry["rows"] = parquet_rows(path)
        entries.append(entry)
    return entries


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit (with `+dirty` for local edits)."""
    from pipelines import __version__

    info = {"package": __version__}
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if commit:
            dirty = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            info["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_manifest(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Describe `root` and write `manifest.json` atomically; returns the manifest."""
    files = describe_files(root)
    manifest = {
        **meta,
        "files": files,
        "totals": {
            "files": len(files),
            "bytes": sum(f["bytes"] for f in files),
            "rows": {
                top: sum(f.get("rows", 0) for f in files if f["path"].split("/")[0] == top)
                for top in sorted({f["path"].split("/")[0] for f in files if "rows" in f})
            },
        },
    }
    write_json_atomic(root / MANIFEST, manifest, indent=2)
    return manifest


def verify_version(root: Path, check_hashes: bool = True) -> dict[str, Any]:
    """Re-check `root` against its manifest: same file set, sizes, sha256 and Parquet row counts.

    Raises VerifyError listing every mismatch; returns the manifest when all is well.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise VerifyError(f"{root}: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VerifyError(f"{path}: not valid JSON ({exc})") from None
    listed = {entry["path"]: entry for entry in _manifest_entries(path, manifest)}
    problems: list[str] = []
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}
    for missing in sorted(set(listed) - present):
        problems.append(f"missing file {missing}")
    for extra in sorted(present - set(listed)):
        problems.append(f"file not in manifest: {extra}")
    for rel in sorted(set(listed) & present):
        entry, file = listed[rel], root / rel
        if file.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {file.stat().st_size} bytes, manifest says {entry['bytes']}")
            continue
        if check_hashes and sha256_file(file) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
            continue
        if "rows" in entry:
            try:
                rows = parquet_rows(file)
            except Exception as exc:  # a corrupt Parquet footer is a verification failure, not a crash
                problems.append(f"{rel}: unreadable Parquet ({exc})")
                continue
            if rows != entry["rows"]:
                problems.append(f"{rel}: {rows} rows, manifest says {entry['rows']}")
    if problems:
        raise VerifyError(f"{root}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return manifest


# key -> expected type of a `files` entry; `rows` is optional (Parquet files only)
ENTRY_KEYS: dict[str, tuple[type, str]] = {
    "path": (str, "a string"),
    "bytes": (int, "an integer"),
    "sha256": (str, "a string"),
}


def _manifest_entries(path: Path, manifest: Any) -> list[dict[str, Any]]:
    """The `files` entries of a parsed manifest, checked for shape: a damaged or hand-edited manifest is a
    VerifyError naming the file and the key expected, never an AttributeError or KeyError from deep inside."""
    if not isinstance(manifest, dict):
        raise VerifyError(
            f"{path}: expected a JSON object with a 'files' list, got {type(manifest).__name__}"
        )
    files = manifest.get("files")
    if not isinstance(files, list):
        raise VerifyError(
            f"{path}: expected key 'files' (a list of file entries), got {type(files).__name__}"
        )
    for index, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise VerifyError(f"{path}: files[{index}] is {type(entry).__name__}, expected an object")
        for key, (kind, expected) in ENTRY_KEYS.items():
            value = entry.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                what = "missing" if key not in entry else f"a {type(value).__name__}"
                raise VerifyError(
                    f"{path}: files[{index}] ({entry.get('path', '?')}): key '{key}' is {what}, "
                    f"expected {expected}"
                )
        rows = entry.get("rows")
        if "rows" in entry and (not isinstance(rows, int) or isinstance(rows, bool)):
            raise VerifyError(
                f"{path}: files[{index}] ({entry['path']}): key 'rows' is a {type(rows).__name__}, expected an integer"
            )
    return files
