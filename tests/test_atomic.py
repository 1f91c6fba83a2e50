"""pipelines/atomic.py: every committed file appears whole under its final name or not at all."""

from __future__ import annotations

import os

import pytest

from pipelines.atomic import atomic_path, commit_dir, copy_atomic, write_bytes_atomic, write_json_atomic


def _entries(folder):
    return sorted(os.listdir(folder))


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "counts.json"
    write_json_atomic(target, {"a": 1}, indent=1)
    write_json_atomic(target, {"a": 2}, indent=1)
    assert target.read_text() == '{\n "a": 2\n}'
    assert _entries(target.parent) == ["counts.json"]


def test_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    target = tmp_path / "plan.json"
    write_bytes_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})  # fails while serialising: nothing is written
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # fails inside the temp file's write
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["plan.json"]


def test_copy_atomic_copies_and_cleans_up_on_a_missing_source(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 1000)
    copy_atomic(source, tmp_path / "out" / "b.bin")
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"x" * 1000
    with pytest.raises(FileNotFoundError):
        copy_atomic(tmp_path / "missing.bin", tmp_path / "out" / "c.bin")
    with pytest.raises(FileNotFoundError):
        copy_atomic(tmp_path / "missing.bin", tmp_path / "out" / "c.bin", link=True)
    assert _entries(tmp_path / "out") == ["b.bin"]
    copy_atomic(source, tmp_path / "out" / "d.bin", link=True)  # same device: one file, two names
    assert (tmp_path / "out" / "d.bin").stat().st_ino == source.stat().st_ino
    assert (tmp_path / "out" / "b.bin").stat().st_ino != source.stat().st_ino


def test_commit_dir_never_replaces_a_folder(tmp_path):
    staged = tmp_path / ".v1.tmp-x"
    staged.mkdir()
    (staged / "f").write_text("1")
    commit_dir(staged, tmp_path / "v1")
    assert (tmp_path / "v1" / "f").read_text() == "1" and not staged.exists()
    again = tmp_path / ".v1.tmp-y"
    again.mkdir()
    (again / "g").write_text("2")
    with pytest.raises(OSError):
        commit_dir(again, tmp_path / "v1")
    assert _entries(tmp_path / "v1") == ["f"]


def test_atomic_path_commits_only_a_finished_file(tmp_path):
    import gzip

    target = tmp_path / "excluded" / "00000.jsonl.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as temp, gzip.open(temp, "wt") as f:
        f.write("half a line")
        raise RuntimeError("crash mid-write")
    assert _entries(tmp_path / "excluded") == []
    with atomic_path(target) as temp, gzip.open(temp, "wt") as f:
        f.write('{"id": 1}\n')
    with gzip.open(target, "rt") as f:
        assert f.read() == '{"id": 1}\n'
