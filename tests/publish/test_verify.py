"""`corpus verify`: every version is checked under --all, and a malformed manifest is a named error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main as corpus
from pipelines.publish.manifest import MANIFEST, VerifyError, verify_version
from pipelines.publish.publish import publish_folder


def _stage(root: Path, rows: int) -> Path:
    folder = root / f"staging-{rows}"
    (folder / "pretrain").mkdir(parents=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(rows)]}), folder / "pretrain" / "part-0.parquet")
    return folder


def _published(tmp_path: Path, versions: int) -> Path:
    out = tmp_path / "out"
    for n in range(1, versions + 1):
        publish_folder(out, _stage(tmp_path, n * 10), {})
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = corpus(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_all_checks_every_version_and_names_each_bad_one(tmp_path, capsys):
    out = _published(tmp_path, 3)
    for bad in ("v1", "v2"):
        (out / "versions" / bad / "stray.txt").write_text("?")
    code, text, err = _run(capsys, "verify", str(out), "--all")
    assert code == 1
    assert text.count("ok ") == 1 and f"ok {out / 'versions' / 'v3'}" in text
    failed = [line for line in err.splitlines() if line.startswith("verify failed: ")]
    assert any(str(out / "versions" / "v1") in line for line in failed)
    assert any(str(out / "versions" / "v2") in line for line in failed)
    assert "file not in manifest: stray.txt" in err
    (out / "versions" / "v1" / "stray.txt").unlink()
    (out / "versions" / "v2" / "stray.txt").unlink()
    code, text, err = _run(capsys, "verify", str(out), "--all")
    assert code == 0 and text.count("ok ") == 3 and err == ""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: [], "expected a JSON object with a 'files' list, got list"),
        (lambda m: {**m, "files": None}, "expected key 'files'"),
        (lambda m: {**m, "files": ["pretrain/part-0.parquet"]}, r"files\[0\] is str, expected an object"),
        (
            lambda m: {**m, "files": [{k: v for k, v in f.items() if k != "bytes"} for f in m["files"]]},
            r"files\[0\] \(pretrain/part-0.parquet\): key 'bytes' is missing, expected an integer",
        ),
        (
            lambda m: {**m, "files": [{k: v for k, v in f.items() if k != "sha256"} for f in m["files"]]},
            "key 'sha256' is missing",
        ),
        (
            lambda m: {**m, "files": [{**f, "rows": "10"} for f in m["files"]]},
            "key 'rows' is a str, expected an integer",
        ),
    ],
)
def test_a_malformed_manifest_is_a_verify_error_naming_file_and_key(tmp_path, capsys, edit, expected):
    out = _published(tmp_path, 1)
    path = out / "versions" / "v1" / MANIFEST
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(VerifyError, match=expected) as raised:
        verify_version(out / "versions" / "v1")
    assert str(path) in str(raised.value)
    code, _, err = _run(capsys, "verify", str(out), "--all")
    assert code == 1 and str(path) in err


def test_verify_fails_on_a_dangling_latest(tmp_path, capsys):
    out = _published(tmp_path, 2)
    os.remove(out / "latest")
    os.symlink("versions/v7", out / "latest")
    code, text, err = _run(capsys, "verify", str(out), "--all")
    assert code == 1 and text.count("ok ") == 2  # the versions are fine and still checked
    assert f"{out / 'latest'} points at versions/v7, which does not exist" in err
    code, _, err = _run(capsys, "verify", str(out))
    assert code == 1 and "versions/v7, which does not exist" in err


@pytest.mark.parametrize("versions", [0, 1])
def test_verify_all_fails_when_nothing_is_published(tmp_path, capsys, versions):
    """A first publish killed before `latest` existed (versions/ empty, or a complete v1 not yet pointed at)
    passed `verify --all` with exit 0, so a health check on it called the OUT healthy."""
    out = _published(tmp_path, versions) if versions else tmp_path / "out"
    (out / "versions").mkdir(parents=True, exist_ok=True)
    if versions:
        os.remove(out / "latest")
    code, text, err = _run(capsys, "verify", str(out), "--all")
    assert code == 1 and f"{out}: nothing published yet (no `latest`)" in err
    assert text.count("ok ") == versions  # the versions present are still checked
    code, _, err = _run(capsys, "verify", str(out))
    assert code == 1 and "nothing published yet" in err


def test_verify_names_a_latest_that_is_not_a_symlink(tmp_path, capsys):
    """An OUT copied with symlinks followed has a real `latest` folder; verify said "nothing published yet"."""
    import shutil

    out = _published(tmp_path, 1)
    os.remove(out / "latest")
    shutil.copytree(out / "versions" / "v1", out / "latest")
    for argv in (["verify", str(out)], ["verify", str(out), "--all"]):
        code, _, err = _run(capsys, *argv)
        assert code == 1 and f"{out / 'latest'} is not a symlink to a version" in err
