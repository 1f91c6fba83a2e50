"""Publishing primitives: manifest + verify, atomic latest, retention, the run lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.publish.lock import LockHeld, LockUnsupported, RunLock
from pipelines.publish.manifest import VerifyError, verify_version
from pipelines.publish.publish import (
    apply_retention,
    latest_version,
    list_versions,
    publish_folder,
)

CORPUS = str(Path(sys.executable).with_name("corpus"))


def stage(root: Path, rows: int) -> Path:
    folder = root / f"staging-{rows}"
    (folder / "pretrain").mkdir(parents=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(rows)]}), folder / "pretrain" / "part-0.parquet")
    (folder / "mixture.json").write_text(json.dumps({"rows": rows}))
    return folder


def test_publish_verify_and_latest(tmp_path):
    out = tmp_path / "out"
    v1 = publish_folder(out, stage(tmp_path, 10), {"note": "first"})
    v2 = publish_folder(out, stage(tmp_path, 20), {"note": "second"})
    assert (v1, v2) == ("v1", "v2")
    assert latest_version(out) == "v2"
    assert os.readlink(out / "latest") == "versions/v2"
    manifest = verify_version(out / "latest")
    assert manifest["parent"] == "v1"
    assert manifest["totals"]["rows"] == {"pretrain": 20}
    result = subprocess.run([CORPUS, "verify", str(out), "--all"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 2


def test_verify_detects_tampering(tmp_path):
    out = tmp_path / "out"
    publish_folder(out, stage(tmp_path, 10), {})
    part = out / "versions" / "v1" / "pretrain" / "part-0.parquet"
    pq.write_table(pa.table({"id": ["x"] * 10}), part)  # same row count, different bytes
    with pytest.raises(VerifyError, match="part-0.parquet"):
        verify_version(out / "versions" / "v1")
    (out / "versions" / "v1" / "stray.txt").write_text("?")
    result = subprocess.run([CORPUS, "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "file not in manifest: stray.txt" in result.stderr


def test_retention_keeps_latest(tmp_path):
    out = tmp_path / "out"
    for rows in (1, 2, 3):
        publish_folder(out, stage(tmp_path, rows), {})
    assert apply_retention(out, keep=2) == ["v1"]
    assert list_versions(out) == ["v2", "v3"]
    assert latest_version(out) == "v3"
    # a rollback points latest at an older version: retention must never delete it
    publish_folder(out, stage(tmp_path, 4), {})
    os.remove(out / "latest")
    os.symlink("versions/v2", out / "latest")
    assert apply_retention(out, keep=1) == ["v3", "v4"]
    assert list_versions(out) == ["v2"]
    verify_version(out / "latest")


def test_lock_excludes_and_takes_over_stale(tmp_path):
    path = tmp_path / "state" / "run.lock"
    with RunLock(path, "refresh"), pytest.raises(LockHeld, match=rf"held by refresh \(pid {os.getpid()}"):
        RunLock(path, "refresh").acquire()
    assert not path.exists()
    # whatever a dead run left behind is taken over: its record, an empty file (killed between create and
    # write), garbage, or a record naming a live but unrelated process (a reused pid)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for left in (
            json.dumps({"host": os.uname().nodename, "pid": dead.pid, "purpose": "refresh", "started": "x"}),
            "",
            "\x00garbage",
            json.dumps({"host": os.uname().nodename, "pid": unrelated.pid, "purpose": "run", "started": "x"}),
        ):
            path.write_text(left)
            with RunLock(path, "refresh") as lock:
                assert lock.acquired
                assert json.loads(path.read_text())["pid"] == os.getpid()
            assert not path.exists()
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_filesystem_without_locks_fails_the_run_instead_of_looking_busy(tmp_path, monkeypatch, capsys):
    """FUSE or NFS without a lock daemon answer ENOLCK: exit 75 ("busy, try later") would make every nightly
    refresh a silent no-op under the README's systemd unit, so it must be an ordinary failure."""
    import errno

    import pipelines.publish.lock as lock_module
    from pipelines.cli import main as corpus

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with pytest.raises(LockUnsupported, match="does not support file locks") as raised:
        RunLock(tmp_path / "run.lock", "refresh").acquire()
    assert not isinstance(raised.value, LockHeld)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "hello"}\n')
    overrides = [f"input={tmp_path / 'in'}/*.jsonl", f"out={tmp_path / 'out'}", "synthetic.enabled=false"]
    assert corpus(["refresh", *overrides]) == 1
    assert "does not support file locks" in capsys.readouterr().err


HOLD = """
import os, sys, time
from pathlib import Path
from pipelines.publish.lock import RunLock
lock = RunLock(Path(sys.argv[1]), "run")
lock.acquire()
child = os.fork()
if child == 0:  # a helper process forked while the lock is held (vLLM and Dask do this)
    time.sleep(30)
    os._exit(0)
print("held", child, flush=True)
time.sleep(float(sys.argv[2]))
os._exit(0)  # dies without releasing, like a SIGKILL
"""


def test_lock_is_held_while_the_holder_lives_and_freed_when_it_dies(tmp_path):
    path = tmp_path / "state" / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "3"], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        word, child = holder.stdout.readline().split()
        assert word == "held"
        with pytest.raises(LockHeld, match=rf"held by run \(pid {holder.pid} on "):
            RunLock(path, "refresh").acquire()
        holder.wait(timeout=30)
        # the holder is gone; its forked child still runs but must not keep the lock alive
        with RunLock(path, "refresh") as lock:
            assert lock.acquired
    finally:
        holder.kill()
        holder.wait()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)


def test_publish_drops_temp_entries_of_killed_writers(tmp_path):
    out = tmp_path / "out"
    staging = stage(tmp_path, 5)
    (staging / "pretrain" / ".part-1.parquet.tmp-abc").write_bytes(b"half a file")
    (staging / ".pretrain.tmp-123").mkdir()
    (staging / ".pretrain.tmp-123" / "x.parquet").write_bytes(b"?")
    publish_folder(out, staging, {})
    manifest = verify_version(out / "latest")
    assert [f["path"] for f in manifest["files"]] == ["mixture.json", "pretrain/part-0.parquet"]


def test_interrupted_publish_is_finished_from_its_journal(tmp_path):
    from pipelines.publish.publish import finish_interrupted
    from pipelines.publish.state import read_journal, write_journal

    out, work = tmp_path / "out", tmp_path / "out" / "work" / "refresh-x"
    publish_folder(out, stage(tmp_path, 1), {})
    staging = work / "version"
    staging.parent.mkdir(parents=True)
    os.rename(stage(tmp_path, 2), staging)
    journal = {"phase": "publishing", "version": "v2", "run_id": "refresh-x", "mode": "refresh", "commit": {}}
    write_journal(work, journal)
    # killed before the rename: nothing to finish here (the stages resume and publish again)
    assert finish_interrupted(out, work, journal)["phase"] == "publishing" and latest_version(out) == "v1"
    # killed between the rename and the flip: the verified version becomes latest
    publish_folder_no_flip = out / "versions" / "v2"
    from pipelines.publish.manifest import write_manifest

    write_manifest(staging, {"version": "v2"})
    os.rename(staging, publish_folder_no_flip)
    assert finish_interrupted(out, work, journal)["phase"] == "published"
    assert latest_version(out) == "v2" and read_journal(work)["phase"] == "published"
    verify_version(out / "latest")


def test_state_commit_is_idempotent_and_sweeps_what_it_does_not_name(tmp_path):
    from pipelines.publish.state import StateError, StateStore, commit_state

    store = StateStore(tmp_path / "state")
    kept = tmp_path / "work" / "dedup" / "output"
    kept.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"]}), kept / "00000.parquet")
    (kept / ".00001.parquet.tmp-x").write_bytes(b"?")
    staged = tmp_path / "work" / "dedup" / "index"
    (staged / "bucket_000").mkdir(parents=True)
    (staged / "bucket_000" / "run.minhash.index").write_bytes(b"0123")
    (staged / "index_config.json").write_text(json.dumps({"n_grams": 5}))
    inputs = {"/in/a.jsonl": {"size": 1, "modified": "1", "etag": None}}
    journal = {
        "version": "v1",
        "run_id": "run-1",
        "mode": "full",
        "commit": {
            "kept_dir": str(kept),
            "staged_index": str(staged),
            "inputs": inputs,
            "base_version": None,
        },
    }
    state = commit_state(store, journal)
    assert state.version == "v1" and state.batches == ["run-1-v1"] and state.index == "run-1-v1"
    assert [p.name for p in (store.shards_root / "run-1-v1").iterdir()] == ["00000.parquet"]
    assert (kept / "00000.parquet").is_file(), "the work folder keeps its copy (a hard link)"
    assert commit_state(store, journal) == store.load(), "committing twice changes nothing"

    # a refresh built on v1 adds a batch and a new index generation (old files linked, new ones added); its
    # staged index reuses a file name and size of v1's (index names come from file names and sizes): both stay
    # (new files, as a new run writes them: v1's index holds hard links to the old ones)
    (staged / "bucket_000" / "run.minhash.index").unlink()
    (staged / "bucket_000" / "run.minhash.index").write_bytes(b"abcd")
    (staged / "bucket_000" / "more.minhash.index").write_bytes(b"4567")
    refresh = {**journal, "version": "v2", "run_id": "refresh-2", "mode": "refresh"}
    refresh["commit"] = {
        **journal["commit"],
        "base_version": "v1",
        "inputs": {"/in/b.jsonl": inputs["/in/a.jsonl"]},
    }
    (store.shards_root / "stray-batch").mkdir()  # e.g. from a commit killed before state.json was written
    state = commit_state(store, refresh)
    assert state.batches == ["run-1-v1", "refresh-2-v2"] and sorted(state.inputs) == [
        "/in/a.jsonl",
        "/in/b.jsonl",
    ]
    bucket = store.index_root / "refresh-2-v2" / "bucket_000"
    assert {p.name: p.read_bytes() for p in bucket.iterdir()} == {
        "run-1-v1--run.minhash.index": b"0123",
        "refresh-2-v2--run.minhash.index": b"abcd",
        "refresh-2-v2--more.minhash.index": b"4567",
    }
    assert sorted(store.sweep(state)) == ["minhash/run-1-v1", "shards/stray-batch"]
    assert sorted(p.name for p in store.shards_root.iterdir()) == ["refresh-2-v2", "run-1-v1"]
    # a refresh journal built on another version than the state's is refused, naming the versions
    stale = {**refresh, "version": "v3", "commit": {**refresh["commit"], "base_version": "v1"}}
    with pytest.raises(StateError, match="holds version v2, but run refresh-2 was built on v1"):
        commit_state(store, stale)
