"""`corpus run` / `corpus refresh` end to end: real files, real Dask cluster, `corpus` subprocesses.

Every test starts from a private copy of one published v1 (20 documents, `corpus run`), adds shards to a
folder of its own and runs `corpus refresh` as users and cron do. The cluster is the session's LocalCluster
(`cluster.kind=address`), so a SIGKILLed refresh takes no workers with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
from refresh_fixtures import (
    CORPUS,
    DialogueServer,
    corpus,
    document,
    near_duplicate,
    pretrain_texts,
    summary_of,
    with_group_killed,
    write_shard,
)

import pipelines.stats as stats
from pipelines.publish.faults import POINTS
from pipelines.publish.manifest import verify_version
from pipelines.publish.publish import latest_version, list_versions


def state_of(out) -> dict:
    return json.loads((out / "state" / "state.json").read_text())


def verify_ok(out, every: bool = False) -> str:
    result = subprocess.run(
        [CORPUS, "verify", str(out), *(["--all"] if every else [])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_first_run_publishes_v1_and_refresh_without_new_input_publishes_nothing(world):
    out, summary = world["out"], world["v1"]["summary"]
    assert summary["status"] == "published" and summary["mode"] == "full" and summary["version"] == "v1"
    assert summary["documents_in"] == 20 and summary["documents_out"] == 20
    assert summary["tiers"] == {"all": {"documents": 20, "rows": 20}}
    assert latest_version(out) == "v1" and "ok" in verify_ok(out)
    state = state_of(out)
    assert state["version"] == "v1" and list(state["inputs"]) == [str(world["first"])]
    assert len(state["batches"]) == 1 and state["index"], "the full run resets the state store to its batch"

    result = corpus("refresh", world["overrides"](with_new=False))
    assert result.returncode == 0, result.stderr
    assert "nothing new" in result.stderr
    assert json.loads(result.stdout)["status"] == "nothing new"
    assert list_versions(out) == ["v1"] and latest_version(out) == "v1"
    assert not (out / "state" / "run.lock").exists()


def test_refresh_adds_a_shard_and_drops_a_near_duplicate_of_v1(world):
    out, new = world["out"], world["new"]
    planted = near_duplicate(document(3))  # document 3 is in v1
    write_shard(new / "b.jsonl", list(range(100, 106)), [{"text": planted, "url": "https://copy.example/3"}])
    compact = "publish.index_max_files=1"  # merge v1's and v2's index files at once (default: beyond 16)
    summary = summary_of(corpus("refresh", world["overrides"](compact)))

    assert summary["status"] == "published" and summary["version"] == "v2" and summary["mode"] == "refresh"
    assert summary["new_shards"] == 1 and summary["new_inputs"] == [str(new / "b.jsonl")]
    assert summary["documents_in"] == 7 and summary["near_duplicates_removed"] == 1
    assert summary["documents_out"] == 6 and summary["documents_total"] == 26
    assert summary["tiers"] == {"all": {"documents": 26, "rows": 26}}
    assert summary["dialogues_added"] == 0 and summary["seconds"] > 0

    v1_texts = set(pretrain_texts(out / "versions" / "v1"))
    v2_texts = pretrain_texts(out / "versions" / "v2")
    assert len(v2_texts) == len(set(v2_texts)) == 26
    assert v1_texts <= set(v2_texts), "v2 keeps every v1 document"
    assert {document(s) for s in range(100, 106)} <= set(v2_texts)
    assert planted not in v2_texts, "the near-duplicate of a v1 document is removed"

    # stats: curate ran on the new shard only (7 documents in), the mixture covers all 26
    tables = stats.load(out)
    stages = tables["stages"].set_index("stage")
    assert int(stages.loc["curate", "documents_in"]) == 7
    assert int(stages.loc["dedup", "dropped"]) == 1
    assert int(stages.loc["mix", "rows"]) == 26
    assert tables["version"]["version"].iloc[0] == "v2" and tables["version"]["parent"].iloc[0] == "v1"
    manifest = verify_version(out / "versions" / "v2")
    assert manifest["mode"] == "refresh" and manifest["results"]["inputs"]["new_inputs"] == 1
    assert "ok" in verify_ok(out, every=True)

    state = state_of(out)
    assert state["version"] == "v2" and len(state["batches"]) == 2 and len(state["inputs"]) == 2
    buckets = sorted((out / "state" / "minhash" / state["index"]).glob("bucket_*"))
    assert buckets and all(
        [p.name for p in b.iterdir()] == [f"{state['index']}--compacted.minhash.index"] for b in buckets
    ), "one merged file per bucket"
    assert os.path.isfile(summary["log"]) and "refresh" in Path(summary["log"]).read_text()

    # the same inputs again: nothing new; a changed file (same path, new size and mtime) is new again
    again = corpus("refresh", world["overrides"]())
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "nothing new"
    late_copy = {"text": near_duplicate(document(5)), "url": "https://copy.example/5"}  # document 5 is in v1
    write_shard(new / "b.jsonl", list(range(100, 106)) + [107], [late_copy])
    changed = summary_of(corpus("refresh", world["overrides"](compact)))
    assert changed["version"] == "v3" and changed["new_inputs"] == [str(new / "b.jsonl")]
    # the six documents published in v2 are near-duplicates of themselves now, and the late copy of a v1
    # document is caught too: the merged index files hold both batches; only #107 is added
    assert changed["documents_in"] == 8 and changed["near_duplicates_removed"] == 7
    assert changed["documents_out"] == 1 and changed["documents_total"] == 27


def run_until_killed(world, fault: str, *extra: str) -> subprocess.CompletedProcess:
    result = corpus("refresh", world["overrides"](*extra), fault=fault)
    assert result.returncode == -signal.SIGKILL, f"{fault}: exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "killing pid" in result.stderr and f" at {fault}" in result.stderr
    return result


def test_sigkill_at_every_point_leaves_latest_intact_and_the_next_refresh_finishes(world):
    out, new = world["out"], world["new"]
    write_shard(new / "b.jsonl", list(range(100, 106)), [{"text": near_duplicate(document(5)), "url": "u:5"}])
    # the commit merges v1's and v2's index files and folds their kept-shard batches into one (killed in both)
    compact = ("publish.index_max_files=1", "publish.shard_batches_max=1")
    # before the flip: between stages, and on both sides of the rename of the staged version
    before_flip = ["after_lock", "after_curate", "after_mix", "publish_before_rename", "publish_after_rename"]
    assert set(before_flip) <= set(POINTS)
    for fault in before_flip:
        result = run_until_killed(world, fault, *compact)
        assert latest_version(out) == "v1", f"{fault}: latest moved"
        assert "ok" in verify_ok(out), f"{fault}: latest does not verify"
        assert state_of(out)["version"] == "v1", f"{fault}: state committed before publishing"
        if fault == "after_lock":
            assert (out / "state" / "run.lock").exists(), "a killed run leaves its lock behind"
        else:
            assert "taking over stale lock" in result.stderr, "the dead run's lock is taken over"
    # killed between the rename and the flip: v2 is complete and verifies, but is not `latest` yet
    assert list_versions(out) == ["v1", "v2"]
    assert "ok" in verify_ok(out, every=True)

    # the next runs first finish v2 (flip), then die inside the state commit: latest is v2, state catches up
    run_until_killed(world, "commit_after_shards", *compact)
    assert latest_version(out) == "v2" and state_of(out)["version"] == "v1"
    run_until_killed(world, "commit_during_index_merge", *compact)
    assert state_of(out)["version"] == "v1", "a generation killed mid-merge is not committed"
    run_until_killed(world, "commit_after_state", *compact)
    assert state_of(out)["version"] == "v2" and len(state_of(out)["batches"]) == 2
    # the fold is a second switch after the commit: killed in it, the state stays committed and unfolded
    run_until_killed(world, "commit_during_shard_fold", *compact)
    assert state_of(out)["version"] == "v2" and len(state_of(out)["batches"]) == 2

    final = summary_of(corpus("refresh", world["overrides"](*compact)))
    index = out / "state" / "minhash"
    assert [p.name for p in index.iterdir()] == [state_of(out)["index"]], "the killed merge's folder is swept"
    assert all(len(list(b.iterdir())) == 1 for b in (index / state_of(out)["index"]).glob("bucket_*"))
    assert final["status"] == "published" and final["version"] == "v2" and final["recovered"] is True
    assert final["documents_in"] == 7 and final["documents_out"] == 6 and final["documents_total"] == 26
    assert list_versions(out) == ["v1", "v2"] and latest_version(out) == "v2"
    assert "ok" in verify_ok(out, every=True)
    texts = pretrain_texts(out / "versions" / "v2")
    assert len(texts) == 26 and near_duplicate(document(5)) not in texts
    state = state_of(out)
    assert len(state["batches"]) == 1 and state["batches"][0].endswith("-folded"), (
        "v1's and v2's batches folded"
    )
    assert sorted(p.name for p in (out / "state" / "shards").iterdir()) == state["batches"], (
        "no stray folders"
    )
    folded = pq.read_table(out / "state" / "shards" / state["batches"][0])
    assert folded.num_rows == 26 and sorted(folded.column("text").to_pylist()) == sorted(texts)
    assert [p.name for p in (out / "work").iterdir()] == ["done"], "the work folder was filed under done/"
    # resumed runs skipped what earlier (killed) runs had completed
    log = Path(final["log"]).read_text()
    assert log.count("already complete") >= 1
    starts = [line for line in log.splitlines() if "input(s) to curate" in line]  # one per attempt (appended)
    assert len(starts) >= 2 and "resuming" not in starts[0]
    assert all("resuming an interrupted attempt" in line for line in starts[1:])
    assert json.loads(corpus("refresh", world["overrides"]()).stdout)["status"] == "nothing new"


def test_two_concurrent_refreshes_exactly_one_proceeds_and_retention_keeps_two(world):
    out, new = world["out"], world["new"]
    write_shard(new / "b.jsonl", list(range(100, 104)))
    lock = out / "state" / "run.lock"
    # the first one pauses 10 s right after taking the lock, so the second surely finds it held
    env = {k: v for k, v in os.environ.items() if k != "PROSOCIAL_FAULT"} | {
        "PROSOCIAL_PAUSE": "after_lock:10"
    }
    args = [CORPUS, "refresh", *world["overrides"](), "--log-level", "WARNING"]
    first = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        deadline = time.time() + 60
        while not lock.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert lock.exists(), "the first refresh took the lock"
        assert json.loads(lock.read_text())["pid"] == first.pid
        second = corpus("refresh", world["overrides"]())
        out1, err1 = first.communicate(timeout=300)
    finally:
        with_group_killed(first)
    assert second.returncode == 75, second.stderr
    assert f"held by corpus refresh (pid {first.pid}" in second.stderr
    assert first.returncode == 0, err1[-3000:]
    assert json.loads(out1)["version"] == "v2" and latest_version(out) == "v2"

    # retention N=2 after a third version: v1 goes, latest (v3) stays valid
    write_shard(new / "c.jsonl", list(range(200, 203)))
    third = summary_of(corpus("refresh", world["overrides"]("publish.retention=2")))
    assert third["version"] == "v3" and third["retention_removed"] == ["v1"]
    assert list_versions(out) == ["v2", "v3"] and latest_version(out) == "v3"
    assert verify_ok(out, every=True).count("ok ") == 2
    assert len(pretrain_texts(out / "latest")) == 27
    assert pq.read_metadata(next((out / "latest" / "stats").glob("version.parquet"))).num_rows == 1


def test_refresh_carries_dialogues_and_tops_up_only_the_shortfall(world):
    out, new = world["out"], world["new"]
    server = DialogueServer()
    try:

        def synthetic(target: int, min_score: float = 0.0) -> list[str]:
            return world["overrides"](
                "synthetic.enabled=true",
                "synthetic.engine=openai",
                "synthetic.model=test-model",
                f"synthetic.target={target}",
                "synthetic.chunk_size=2",
                f"synthetic.min_score={min_score}",
                f"synthetic.openai.base_url={server.base_url}",
            )

        write_shard(new / "b.jsonl", list(range(100, 103)))
        first = summary_of(corpus("refresh", synthetic(3)))  # v1 has no dialogues: all 3 are generated
        assert first["version"] == "v2" and server.requests == 3
        assert (
            first["dialogues_carried"] == 0
            and first["dialogues_added"] == 3
            and first["dialogues_total"] == 3
        )

        write_shard(new / "c.jsonl", list(range(200, 203)))
        second = summary_of(corpus("refresh", synthetic(5)))  # carry 3, generate only the 2 missing
        assert second["version"] == "v3" and server.requests == 5
        assert (
            second["dialogues_carried"] == 3
            and second["dialogues_added"] == 2
            and second["dialogues_total"] == 5
        )

        # a model whose dialogues all fail validation: the target counts attempts, so the missing 2 are
        # attempted once, not again every night (that would burn the GPUs on every refresh)
        for night, name in enumerate(["d.jsonl", "e.jsonl"]):
            write_shard(new / name, list(range(300 + 10 * night, 303 + 10 * night)))
            rejected = summary_of(corpus("refresh", synthetic(7, min_score=1.0)))
            assert rejected["dialogues_added"] == 0 and rejected["dialogues_total"] == 5
        assert server.requests == 7
    finally:
        server.close()
    v2 = pq.read_table(out / "versions" / "v2" / "midtrain")
    v3 = pq.read_table(out / "versions" / "v3" / "midtrain")
    assert v2.num_rows == 3 and v3.num_rows == 5
    ids = v3.column("id").to_pylist()
    assert len(set(ids)) == 5 and set(v2.column("id").to_pylist()) <= set(ids), "v2's dialogues are carried"
    assert any(p.name.startswith("carry-v2-") for p in (out / "versions" / "v3" / "midtrain").iterdir())
    assert state_of(out)["synthetic"] == {"rounds": 3, "attempted": 7}
    assert "ok" in verify_ok(out, every=True)


def test_an_unfinishable_commit_stops_refresh_but_corpus_run_rebuilds(world):
    """The error names `corpus run` as the remedy, so `corpus run` must not trip over the same journal."""
    import shutil

    out, new = world["out"], world["new"]
    write_shard(new / "b.jsonl", list(range(100, 104)))
    run_until_killed(world, "publish_after_flip")
    assert latest_version(out) == "v2" and state_of(out)["version"] == "v1"
    work = next(p.parent for p in (out / "work").glob("*/journal.json"))
    kept = json.loads((work / "journal.json").read_text())["commit"]["kept_dir"]
    shutil.rmtree(kept)  # the kept shards are lost (a disk cleanup, a hand edit)

    refused = corpus("refresh", world["overrides"]())
    assert refused.returncode == 78 and "are gone" in refused.stderr
    assert latest_version(out) == "v2" and state_of(out)["version"] == "v1"

    rebuilt = summary_of(corpus("run", world["overrides"]()))
    assert rebuilt["status"] == "published" and rebuilt["version"] == "v3"
    assert rebuilt["documents_out"] == 24 and state_of(out)["version"] == "v3"
    assert (out / "work" / "unrecoverable" / work.name / "journal.json").is_file()
    assert "ok" in verify_ok(out, every=True)


def test_a_damaged_kept_shard_fails_with_one_line_naming_it(world):
    """A truncated shard under state/shards failed every refresh with pyarrow's traceback, naming no file."""
    out, new = world["out"], world["new"]
    damaged = sorted((out / "state" / "shards").glob("*/*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    write_shard(new / "b.jsonl", list(range(100, 104)))
    failed = corpus("refresh", world["overrides"]())
    assert failed.returncode == 1
    assert f"MixError: {damaged}: not a readable Parquet file" in failed.stderr
    assert "`corpus run` rebuilds them" in failed.stderr and "traceback: " in failed.stderr
    assert "Traceback (most recent call last)" not in failed.stderr  # it is in the run's log instead
    log = failed.stderr.split("traceback: ", 1)[1].split()[0]
    assert "Traceback (most recent call last)" in Path(log).read_text()
    assert latest_version(out) == "v1"
    assert summary_of(corpus("run", world["overrides"]()))["version"] == "v2"


def test_refresh_refuses_a_state_that_describes_another_version_or_lost_its_index(world):
    """A hand rollback of `latest`, or a deleted MinHash index, would make a refresh silently wrong."""
    import shutil

    out, new = world["out"], world["new"]
    write_shard(new / "b.jsonl", list(range(100, 104)))
    shutil.copytree(out / "versions" / "v1", out / "versions" / "v0")
    os.replace(out / "latest", out / "latest.v1")
    os.symlink("versions/v0", out / "latest")  # a rollback to an older version
    refused = corpus("refresh", world["overrides"]())
    assert (
        refused.returncode == 78 and "describes v1 but" in refused.stderr and "points at v0" in refused.stderr
    )
    os.replace(out / "latest.v1", out / "latest")
    shutil.rmtree(out / "versions" / "v0")

    index = out / "state" / "minhash" / state_of(out)["index"]
    shutil.rmtree(index)
    refused = corpus("refresh", world["overrides"]())
    assert refused.returncode == 78 and f"{index} is missing" in refused.stderr
    assert latest_version(out) == "v1" and state_of(out)["version"] == "v1"
    assert not list((out / "work").glob("*/curate")), "refused before hours of curation, not after"


def test_refresh_names_the_shaping_setting_that_changed_and_ignores_performance_settings(world):
    fast = corpus("refresh", world["overrides"]("curate.tasks=3", "classifier.batch_size=64", with_new=False))
    assert fast.returncode == 0 and json.loads(fast.stdout)["status"] == "nothing new", fast.stderr[-2000:]
    refused = corpus("refresh", world["overrides"]("curate.language_threshold=0.7", with_new=False))
    assert refused.returncode == 78
    assert "curate.language_threshold: 0.65 -> 0.7" in refused.stderr and "corpus run" in refused.stderr


def test_scoring_identity_of_states_written_before_settings_were_recorded():
    """A state recorded whole-section hashes only: unchanged settings still match, a change is still refused."""
    from pipelines.config import dump_config, load_config
    from pipelines.graph import _short_hash, changed_scoring, scoring_identity

    config = load_config(None, [])
    legacy = {k: v for k, v in scoring_identity(config).items() if k != "settings"}
    legacy.update({s: _short_hash(dump_config(config)[s]) for s in ("curate", "classifier", "dedup")})
    assert changed_scoring(legacy, config) == []
    assert changed_scoring(legacy, load_config(None, ["dedup.n_grams=7"])) == ["dedup (some setting)"]
    recorded = scoring_identity(config)
    assert (
        changed_scoring(recorded, load_config(None, ["dedup.tasks=4", "curate.read.split_bytes=1000000"]))
        == []
    )
    assert changed_scoring(recorded, load_config(None, ["dedup.n_grams=7"])) == ["dedup.n_grams: 5 -> 7"]


def test_an_input_moved_away_after_listing_is_unreadable_and_the_next_refresh_retries_it(world, monkeypatch):
    """Moved between the listing ('input(s) to curate') and the curate plan: the refresh failed with
    InputError. Now it publishes the rest, reports the file unreadable and leaves it unseen; skipped input
    files (a broken link, a note) are in the summary, the run log and the stats."""
    import pipelines.graph as graph
    from pipelines.config import load_config

    out, new = world["out"], world["new"]
    write_shard(new / "b.jsonl", list(range(100, 104)))
    moved = write_shard(new / "new7.jsonl", list(range(110, 113)))
    away = new.parent / "new7.jsonl.away"
    os.symlink(new / "nowhere.jsonl", new / "broken.jsonl")
    (new / "notes.txt").write_text("not an input")
    listing = graph.discover_inputs

    def list_then_move(config):
        found = listing(config)
        moved.rename(away)
        return found

    monkeypatch.setattr(graph, "discover_inputs", list_then_move)
    summary = graph.run_graph(load_config(None, world["overrides"]()), mode="refresh")
    monkeypatch.undo()
    assert summary["status"] == "published" and summary["version"] == "v2"
    assert summary["new_inputs"] == [str(new / "b.jsonl")] and summary["documents_in"] == 4
    assert summary["unreadable_inputs"] == [str(moved)] and summary["unreadable_count"] == 1
    assert summary["skipped_count"] == 3
    assert {Path(s["path"]).name: s["reason"] for s in summary["skipped_inputs"]} == {
        "broken.jsonl": "broken_link",
        "new7.jsonl": "unreadable",
        "notes.txt": "unsupported_format",
    }
    assert str(moved) not in state_of(out)["inputs"]
    log = Path(summary["log"]).read_text()
    assert f"{new / 'broken.jsonl'}: skipped (broken_link" in log and str(new / "notes.txt") in log
    events = stats.load(out)["events"]
    curate = events[(events["stage"] == "curate") & events["shard"].isna()]
    assert sorted(zip(curate["kind"], curate["reason"], curate["count"], strict=True)) == [
        ("file_errors", "broken_link", 1),
        ("file_errors", "unreadable", 1),
        ("not_read", "unsupported_format", 1),
    ]

    away.rename(moved)
    again = summary_of(corpus("refresh", world["overrides"]()))
    assert again["version"] == "v3" and again["new_inputs"] == [str(moved)] and again["documents_in"] == 3
    assert again["unreadable_inputs"] == [] and str(moved) in state_of(out)["inputs"]


def test_only_an_attempt_that_reached_a_stage_is_resumed(tmp_path):
    """The first log line says "resuming" for a work folder an earlier attempt left; an attempt that failed at
    connect leaves only `logs/`, and a rerun then resumes nothing."""
    from pipelines.graph import left_work

    work = tmp_path / "run-1"
    assert not left_work(work)
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "full.log").write_text("connect failed\n")
    (work / "journal.json").write_text("{}")
    assert not left_work(work)
    (work / "curate").mkdir()
    assert left_work(work)
