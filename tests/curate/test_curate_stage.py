"""The curate stage end to end on the real Dask LocalCluster: demo input, languages, dedup, reconciliation,
resume, and the output read back with pyarrow, pandas and `datasets`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from curate_fixtures import (
    DE_SENTENCES,
    FR_SENTENCES,
    html_page,
    mixed_folder,
    prose,
    read_counts,
    run_stage,
    write_jsonl,
)

from pipelines.config import load_config
from pipelines.context import RunContext
from pipelines.parquet import list_parquet, scored_schema

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"


def assert_reconciled(stage: Path, summary: dict) -> None:
    counts = read_counts(stage)
    assert counts, "per-shard counts are written"
    for c in counts:
        assert c["documents_in"] == c["documents_out"] + sum(c["dropped"].values()), c
        assert c["unaccounted"] == 0
        shard = stage / c["shard"] if c["shard"] else None
        rows = pq.ParquetFile(shard).metadata.num_rows if shard else 0
        assert rows == c["documents_out"], f"shard {c['rank']} rows != documents_out"
    assert summary["documents_in"] == summary["documents_out"] + sum(summary["dropped"].values())
    table = pq.read_table(stage / "counts.parquet").to_pandas()
    ins = table[table.metric == "documents_in"]["count"].sum()
    assert ins == summary["documents_in"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, dask_client):
    out = tmp_path_factory.mktemp("demo")
    summary, stage = run_stage(out, [DEMO], dask_client, "curate.exclusions=true")
    return summary, stage


def test_demo_counts(demo_run):
    summary, stage = demo_run
    assert summary["documents_in"] == 14 and summary["documents_out"] == 9
    assert summary["dropped"] == {"language": 2, "exact_duplicate": 1, "extract_empty": 1, "http_status": 1}
    assert summary["unaccounted"] == 0 and summary["file_errors"] == {}
    assert_reconciled(stage, summary)


def test_demo_output_schema_and_provenance(demo_run):
    summary, stage = demo_run
    files = list_parquet(summary["output_dir"])
    assert files and all(Path(f).parent == stage / "output" for f in files)
    table = pq.read_table(files[0])
    assert table.schema.remove_metadata().equals(scored_schema([]).remove_metadata())
    df = pq.ParquetDataset(files).read().to_pandas()
    assert df["id"].str.fullmatch(r"[0-9a-f]{32}").all() and df["id"].is_unique
    assert (df["dup_cluster_size"] == 1).all() and (df["token_count"] > 50).all()
    assert set(df["language"]) == {"en"} and (df["language_score"] > 0.65).all()
    warc = df[df["source"].str.endswith("crawl.warc.gz")].iloc[0]
    assert warc["url"] == "https://demo.prosocial-corpus.example/library-volunteers"
    assert warc["crawl_date"] == "2024-05-06T10:00:00Z" and warc["source_offset"] > 0
    wallet = df[df["source"].str.endswith("returned-wallet.html")].iloc[0]
    assert "Tomás" in wallet["text"], "windows-1252 page decoded"
    assert not any(".tmp-" in p.name for p in (stage / "output").iterdir())


def test_demo_loads_with_pandas_and_datasets(demo_run, tmp_path, monkeypatch):
    import pandas as pd

    summary, _ = demo_run
    files = list_parquet(summary["output_dir"])
    assert len(pd.concat(pd.read_parquet(f) for f in files)) == summary["documents_out"]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == summary["documents_out"]
    assert "ps_care" not in ds.column_names  # this run does not score
    assert set(ds.column_names) >= {"id", "text", "url", "source", "source_offset", "language", "token_count"}


def test_demo_exclusions_keep_dropped_documents(demo_run):
    _, stage = demo_run
    reasons = []
    for path in (stage / "excluded").rglob("*.jsonl.gz"):
        import gzip

        with gzip.open(path, "rt") as f:
            reasons += [json.loads(line)["metadata"]["filter_reason"] for line in f]
    assert sorted(reasons) == sorted(
        ["language", "language", "exact_duplicate", "extract_empty", "http_status"]
    )


def test_rerun_resumes_without_recomputing(demo_run, dask_client):
    summary, stage = demo_run
    before = {p.name: p.stat().st_mtime_ns for p in (stage / "output").iterdir()}
    again, _ = run_stage(stage.parents[2], [DEMO], dask_client, "curate.exclusions=true")
    assert {k: again[k] for k in ("documents_in", "documents_out", "dropped")} == {
        k: summary[k] for k in ("documents_in", "documents_out", "dropped")
    }
    assert {p.name: p.stat().st_mtime_ns for p in (stage / "output").iterdir()} == before


@pytest.mark.parametrize("languages", [["en"], ["en", "de"]])
def test_language_keep_and_drop(tmp_path, dask_client, languages):
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(3):
        (pages / f"en{i}.html").write_text(html_page(prose(i)), encoding="utf-8")
        (pages / f"de{i}.html").write_text(
            html_page(prose(100 + i, DE_SENTENCES), lang="de").replace(
                "This is report number", "Das ist Bericht Nummer"
            ),
            encoding="utf-8",
        )
    (pages / "fr.html").write_text(html_page(prose(200, FR_SENTENCES), lang="fr"), encoding="utf-8")
    summary, stage = run_stage(
        tmp_path / "out", [pages], dask_client, "curate.languages=" + json.dumps(languages)
    )
    df = pq.ParquetDataset(list_parquet(summary["output_dir"])).read().to_pandas()
    kept = sorted(Path(s).stem[:2] for s in df["source"])
    if languages == ["en"]:
        assert kept == ["en"] * 3 and summary["dropped"] == {"language": 4}
    else:
        assert kept == ["de"] * 3 + ["en"] * 3 and summary["dropped"] == {"language": 1}
    assert_reconciled(stage, summary)


def test_exact_dedup_across_ranks(tmp_path, dask_client):
    """The same text in two files (two ranks) is kept once; the later copy is counted in its shard."""
    same = prose(42)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": same, "url": "https://a.org/x"}, {"text": prose(1)}])
    write_jsonl(
        tmp_path / "in" / "b.jsonl",
        [
            {"text": "  " + same.replace("\n", "\n\n").replace(" ", "  "), "url": "https://b.org/y"},
            {"text": prose(2)},
        ],
    )
    summary, stage = run_stage(tmp_path / "out", [tmp_path / "in"], dask_client, "curate.tasks=2")
    assert summary["ranks"] == 2 and summary["documents_out"] == 3
    assert summary["dropped"] == {"exact_duplicate": 1}
    per_shard = [c["dropped"].get("exact_duplicate", 0) for c in read_counts(stage)]
    assert sorted(per_shard) == [0, 1]
    assert_reconciled(stage, summary)


def test_the_kept_copy_does_not_depend_on_how_inputs_are_packed_into_ranks(tmp_path, dask_client):
    """b.jsonl is larger, so with two ranks it is read by rank 0; the copy kept is still a.jsonl's (first in
    the input order), as with one rank."""
    same = prose(42)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": same, "url": "https://a.org/x"}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": p} for p in (prose(1), prose(2), prose(3))] + [
        {"text": same, "url": "https://b.org/y"}
    ])  # fmt: skip
    kept = {}
    for tasks in (1, 2):
        summary, stage = run_stage(
            tmp_path / f"out{tasks}", [tmp_path / "in"], dask_client, f"curate.tasks={tasks}"
        )
        assert summary["ranks"] == tasks and summary["dropped"] == {"exact_duplicate": 1}
        urls = [
            u
            for f in list_parquet(stage / "output")
            for u in pq.read_table(f, columns=["url"])["url"].to_pylist()
        ]
        kept[tasks] = sorted(u for u in urls if u and u.endswith(("/x", "/y")))
    assert kept[1] == kept[2] == ["https://a.org/x"]


def test_changed_inputs_restart_the_stage(tmp_path, dask_client):
    src = tmp_path / "in"
    write_jsonl(src / "a.jsonl", [{"text": prose(1)}])
    first, stage = run_stage(tmp_path / "out", [src], dask_client)
    write_jsonl(src / "b.jsonl", [{"text": prose(2)}])
    second, _ = run_stage(tmp_path / "out", [src], dask_client)
    assert (first["documents_out"], second["documents_out"]) == (1, 2)
    shutil.rmtree(src)


def test_preflight_names_the_problem(tmp_path):
    from pipelines.config import ConfigError, load_config
    from pipelines.curate.stage import preflight

    with pytest.raises(ConfigError, match=re.escape(f"input '{tmp_path / 'missing'}'")):
        preflight(load_config(None, [f"input={tmp_path / 'missing'}"]))
    with pytest.raises(ConfigError, match="curate.tokenizer"):
        preflight(load_config(None, [f"input={DEMO}", f"curate.tokenizer={tmp_path / 'none.json'}"]))
    with pytest.raises(ConfigError, match=re.escape("curate.languages: ['EN', 'english'] are not language")):
        preflight(load_config(None, [f"input={DEMO}", "curate.languages=[EN,english,de]"]))


@pytest.mark.parametrize("keep", [937_000, 900_000, 20, 0])
def test_preflight_rejects_a_damaged_language_model(tmp_path, monkeypatch, keep):
    """A truncated lid.176 crashes fastText's C++ loader in every worker; preflight names the file instead.

    Cut 1 KB short, it loads and predicts every time (fastText reads on past the end of the file) and passed
    preflight, so every worker identified languages with damaged weights; cut at 900 KB it usually crashes,
    but passed once in CI."""
    from classifiers.langid import LID_MODEL
    from pipelines.config import ConfigError, load_config
    from pipelines.curate.stage import preflight

    damaged = tmp_path / "lid.176.ftz"
    damaged.write_bytes(LID_MODEL.read_bytes()[:keep])
    monkeypatch.setenv("PROSOCIAL_LID_MODEL", str(damaged))
    with pytest.raises(ConfigError, match=re.escape(str(damaged))):
        preflight(load_config(None, [f"input={DEMO}"]))


def test_scoring_adds_ps_columns(tmp_path, dask_client, tiny_bundle_path):
    """The prosocial scorer runs last before the writer; its dimensions become ps_* columns."""
    from classifiers.bundle import read_manifest

    bundle = tiny_bundle_path
    manifest = read_manifest(bundle)
    summary, _ = run_stage(
        tmp_path / "out", [DEMO], dask_client, "curate.score=true", f"classifier.bundle={bundle}"
    )
    assert summary["scored"] and summary["classifier_version"] == manifest["version"]
    table = pq.ParquetDataset(list_parquet(summary["output_dir"])).read()
    assert table.schema.names == scored_schema(manifest["dimensions"]).names
    df = table.to_pandas()
    for dim in manifest["dimensions"]:
        assert df[f"ps_{dim}"].between(0, 1).all()
    assert df["prosocial"].notna().all() and (df["classifier_version"] == manifest["version"]).all()


def test_cross_rank_duplicates_in_bounded_passes(tmp_path):
    """Grouping the hash sidecars in several passes (bounded driver memory) finds exactly the copies to drop:
    all but the earliest of each hash in the input order, whichever rank read it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.curate.finalize import cross_rank_duplicates
    from pipelines.curate.output import hashes_name

    rng = np.random.default_rng(7)
    pool = [rng.bytes(16) for _ in range(40)]  # few distinct hashes: many copies within and across ranks
    sizes = (30, 0, 25, 45)
    orders = rng.permutation(sum(sizes)).astype(np.uint64)  # ranks do not read the inputs in order
    ranks, start = [], 0
    for n in sizes:
        hashes = [pool[i] for i in rng.integers(0, len(pool), size=n)]
        order = np.sort(orders[start : start + n])  # within a rank, rows follow the input order
        ranks.append(list(zip(hashes, order.tolist(), strict=True)))
        start += n
    for rank, rows in enumerate(ranks):
        table = pa.table(
            {
                "content_hash": pa.array([h for h, _ in rows], pa.binary(16)),
                "order": pa.array([o for _, o in rows], pa.uint64()),
            }
        )
        pq.write_table(table, tmp_path / hashes_name(rank), row_group_size=7)  # several chunks per file
    first = {}
    for rows in ranks:
        for h, o in rows:
            first[h] = min(first.get(h, o), o)
    expected = {}
    for rank, rows in enumerate(ranks):
        for row, (h, o) in enumerate(rows):
            if o != first[h]:
                expected.setdefault(rank, []).append(row)
    assert expected.get(2) and expected.get(0), "the fixture has copies to drop in several ranks"
    for rows_per_pass in (10**9, 16, 1):
        got = cross_rank_duplicates(tmp_path, world_size=5, rows_per_pass=rows_per_pass)  # rank 4: no file
        assert {r: a.to_pylist() for r, a in got.items()} == expected, rows_per_pass


def test_documents_emptied_by_cleaning_are_counted_not_published(tmp_path, dask_client):
    """Without the drop they reached the output with empty text, and dedup reported them as near-duplicates."""
    write_jsonl(
        tmp_path / "in" / "a.jsonl",
        [{"text": prose(i), "url": f"https://a.org/{i}"} for i in range(3)]
        + [{"text": "Thank you\nGood morning\nThanks again\nSee you", "url": "https://c.org/1"}],
    )
    summary, stage = run_stage(
        tmp_path / "out",
        [tmp_path / "in"],
        dask_client,
        "curate.c4.min_num_sentences=-1",
        "curate.fineweb.enabled=false",
        "curate.gopher_quality.enabled=false",
        "curate.gopher_repetition.enabled=false",
        "curate.exclusions=true",
    )
    assert summary["documents_out"] == 3 and summary["dropped"] == {"empty_after_cleaning": 1}
    texts = [t for f in list_parquet(stage / "output") for t in pq.read_table(f)["text"].to_pylist()]
    assert len(texts) == 3 and all(t.strip() for t in texts)
    assert list((stage / "excluded" / "empty_after_cleaning").glob("*.jsonl.gz"))
    assert_reconciled(stage, summary)


def _two_ranks_sharing_a_text(stage: Path, row_group_rows: int) -> None:
    """Rank shards as the curate writer leaves them: rank 1's last text also opens rank 0 (read earlier)."""
    import hashlib

    from datatrove.data import Document

    from pipelines.curate.output import ScoredShardWriter, counts_name

    writer = ScoredShardWriter(str(stage / "ranks"), [], row_group_rows=row_group_rows)
    for rank, texts in (
        (0, ["dup"] + [f"a{i}" for i in range(9)]),
        (1, [f"b{i}" for i in range(9)] + ["dup"]),
    ):
        docs = (
            Document(
                text=t,
                id=f"{rank}-{i}",
                metadata={
                    "source_offset": i * 100,
                    "unit": rank,
                    "content_hash": hashlib.blake2b(t.encode(), digest_size=16).digest(),
                },
            )
            for i, t in enumerate(texts)
        )
        list(writer.run(docs, rank, 2))
        counts = {"rank": rank, "documents_in": 10, "documents_out": 10, "dropped": {}, "file_errors": {}}
        (stage / "ranks" / counts_name(rank)).write_text(json.dumps(counts))


def test_a_rewritten_shard_keeps_the_writers_row_groups(tmp_path):
    """A shard that lost a cross-rank duplicate was rewritten as one row group, whatever row_group_rows was."""
    from pipelines.curate.finalize import finalize

    _two_ranks_sharing_a_text(tmp_path, row_group_rows=2)
    before = pq.ParquetFile(tmp_path / "ranks" / "00001.parquet").schema_arrow
    counts = finalize(tmp_path, 2)
    assert [c["cross_rank_duplicates"] for c in counts] == [0, 1]
    for rank, rows in ((0, 10), (1, 9)):
        meta = pq.ParquetFile(tmp_path / "output" / f"{rank:05d}.parquet").metadata
        assert meta.num_rows == rows
        assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) == 2, rank
    rewritten = pq.read_table(tmp_path / "output" / "00001.parquet")
    assert rewritten.schema.equals(before, check_metadata=True)
    assert rewritten["text"].to_pylist() == [f"b{i}" for i in range(9)]


def test_a_moved_shard_is_durable_before_its_counts_marker(tmp_path, monkeypatch):
    """`counts/<rank>.json` says the shard is in output/: the rename there must be fsynced (its folder) first."""
    import os

    from pipelines.curate.finalize import finalize

    _two_ranks_sharing_a_text(tmp_path, row_group_rows=4)
    (tmp_path / "ranks" / "00001.parquet").unlink()  # rank 0 alone: moved, not rewritten
    (tmp_path / "ranks" / "00001.hashes.parquet").unlink()
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.path.realpath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    finalize(tmp_path, 2)
    root = tmp_path.resolve()
    moved = events.index(("replace", str(root / "output" / "00000.parquet")))
    marker = events.index(("replace", str(root / "counts" / "00000.json")))
    assert ("fsync", str(root / "output")) in events[moved:marker], events


@pytest.fixture
def log_lines():
    from datatrove.utils.logging import logger

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(sink)


def test_skipped_input_files_reach_the_plan_the_counts_and_the_log(tmp_path, dask_client, log_lines):
    """Broken links and FIFOs are bad inputs: in plan.json, counted as file errors, logged one by one; files in
    no readable format are listed and logged too, but are not file errors. Both when the stage lists a folder
    itself and when it gets the graph's listing (readable files as inputs, the skipped ones beside them)."""
    from pipelines.curate.inputs import discover
    from pipelines.curate.stage import run_curate

    folder = mixed_folder(tmp_path)
    reasons = {
        "arr.json": "json_not_json_lines",
        "broken.jsonl": "broken_link",
        "data.csv": "unsupported_format",
        "fifo.jsonl": "not_regular_file",
        "notes.txt": "unsupported_format",
    }
    summary, stage = run_stage(tmp_path / "out", [folder], dask_client)
    plan = json.loads((stage / "plan.json").read_text())
    assert {Path(s["path"]).name: s["reason"] for s in plan["skipped"]} == reasons
    assert summary["documents_out"] == 3 and summary["unreadable_inputs"] == []
    assert summary["file_errors"] == {"broken_link": 1, "not_regular_file": 1}
    assert summary["skipped_by_reason"] == {
        "unsupported_format": 2,
        "broken_link": 1,
        "json_not_json_lines": 1,
        "not_regular_file": 1,
    }
    assert {Path(s["path"]).name for s in summary["skipped_files"]} == set(reasons)
    saved = json.loads((stage / "summary.json").read_text())
    assert saved["file_errors"] == summary["file_errors"]
    log = "\n".join(log_lines)
    for name in reasons:
        assert str(folder / name) in log, f"{name} is not in the log"
    assert f"{folder / 'broken.jsonl'}: skipped (broken_link" in log

    # as `corpus run` calls it: the graph's listing passes readable files, and what it skipped
    files, skipped = discover([str(folder)])
    config = load_config(None, [f"out={tmp_path / 'out2'}", f"input={folder}", "curate.score=false"])
    ctx = RunContext(config=config, client=dask_client, run_id="run-graph")
    summary = run_curate(ctx, [f.path for f in files], skipped=skipped)
    plan = json.loads((ctx.stage_dir("curate") / "plan.json").read_text())
    assert {Path(s["path"]).name: s["reason"] for s in plan["skipped"]} == reasons
    assert summary["file_errors"] == {"broken_link": 1, "not_regular_file": 1}


def test_strict_stops_at_the_first_bad_input_file_naming_it_and_the_reason(tmp_path, dask_client):
    from pipelines.config import ConfigError
    from pipelines.curate.inputs import InputError, discover
    from pipelines.curate.stage import preflight, run_curate

    folder = mixed_folder(tmp_path)
    broken = re.escape(f"{folder / 'broken.jsonl'}: skipped (broken_link: a symbolic link")
    with pytest.raises(ConfigError, match=broken):
        preflight(load_config(None, [f"input={folder}", "strict=true"]))
    # the stage itself stops too (a link broken after preflight), before any rank runs
    files, skipped = discover([str(folder)])
    config = load_config(
        None, [f"out={tmp_path / 'out'}", f"input={folder}", "curate.score=false", "strict=true"]
    )
    ctx = RunContext(config=config, client=dask_client, run_id="run-strict")
    with pytest.raises(InputError, match=broken):
        run_curate(ctx, [f.path for f in files], skipped=skipped)
    assert not (ctx.stage_dir("curate") / "completions").exists()
    # files in no readable format are not bad inputs: strict does not stop at them
    for name in ("broken.jsonl", "fifo.jsonl"):
        (folder / name).unlink()
    preflight(load_config(None, [f"input={folder}", "strict=true"]))


def test_a_batch_input_gone_before_planning_is_unreadable_not_a_crash(tmp_path, dask_client):
    """The graph listed two new files; one is moved away before the curate stage plans: the other is curated,
    the gone one is a file error and an unreadable input (the state store does not mark it seen)."""
    from pipelines.curate.stage import run_curate
    from pipelines.graph import committed_inputs

    kept = write_jsonl(tmp_path / "in" / "new1.jsonl", [{"text": prose(1)}])
    gone = write_jsonl(tmp_path / "in" / "new7.jsonl", [{"text": prose(2)}])
    config = load_config(None, [f"out={tmp_path / 'out'}", f"input={tmp_path / 'in'}", "curate.score=false"])
    ctx = RunContext(config=config, client=dask_client, run_id="run-gone")
    gone.rename(tmp_path / "elsewhere.jsonl")
    summary = run_curate(ctx, [str(kept), str(gone)])
    assert summary["documents_out"] == 1 and summary["unreadable_inputs"] == [str(gone)]
    assert summary["file_errors"] == {"unreadable": 1}
    batch = {str(kept): {"size": 1}, str(gone): {"size": 2}}
    assert list(committed_inputs(batch, summary)) == [str(kept)]
