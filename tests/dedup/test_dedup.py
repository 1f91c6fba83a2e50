"""MinHash dedup on the real Dask cluster: planted near-duplicates, survivor choice, index for refresh."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import CorpusConfig
from pipelines.context import RunContext
from pipelines.dedup.stage import DedupError, commit_index, dedup_against_index, run_dedup
from pipelines.mix.sample_data import DIMENSIONS, make_scored_table, random_texts, write_scored


def _edit(text: str, rng: np.random.Generator, edits: int) -> str:
    """Replace `edits` random words and append a short sentence: a near-duplicate, not an exact one."""
    words = text.split()
    for pos in rng.choice(len(words), size=edits, replace=False):
        words[pos] = f"edit{rng.integers(1_000_000)}"
    return " ".join(words) + f" updated {rng.integers(1000)}."


def _table_with_clusters(rng: np.random.Generator, n_random: int = 240):
    """Random distinct pages plus two planted clusters: one with a clear best score, one with a tie."""
    base = random_texts(2, rng, 220, 220)
    texts = random_texts(n_random, rng)
    best_cluster = [base[0]] + [_edit(base[0], rng, 3) for _ in range(5)]
    tie_cluster = [base[1]] + [_edit(base[1], rng, 2) for _ in range(2)]
    texts = texts + best_cluster + tie_cluster
    n = len(texts)
    scores = {d: rng.uniform(0.2, 0.6, size=n) for d in DIMENSIONS}
    best_pos = n_random + 3  # an edited copy, not the original, scores highest
    for d in DIMENSIONS:
        scores[d][best_pos] = 0.9
        scores[d][n_random + 6 :] = 0.5  # the tie cluster: identical scores
    order = rng.permutation(n)  # scatter the copies over files and ranks
    table = make_scored_table(
        n, seed=1, texts=[texts[i] for i in order], scores={d: scores[d][order] for d in DIMENSIONS}
    )
    inverse = np.argsort(order)
    ids = table["id"].to_pylist()
    best_ids = [ids[inverse[n_random + k]] for k in range(6)]
    tie_ids = [ids[inverse[n_random + 6 + k]] for k in range(3)]
    return table, best_ids, ids[inverse[best_pos]], tie_ids


@pytest.fixture(scope="module")
def deduped(tmp_path_factory, dask_client):
    root = tmp_path_factory.mktemp("dedup")
    rng = np.random.default_rng(7)
    table, best_ids, best_id, tie_ids = _table_with_clusters(rng)
    write_scored(root / "scored", table, files=3)
    ctx = RunContext(config=CorpusConfig(out=root / "out"), client=dask_client, run_id="run-test")
    ctx.results["curate"] = {"output_dir": str(root / "scored")}
    result = run_dedup(ctx)
    return ctx, table, result, best_ids, best_id, tie_ids


def _read(folder) -> pa.Table:
    return pq.read_table(folder)


def test_planted_near_duplicates_keep_the_most_prosocial(deduped):
    _, table, result, best_ids, best_id, _ = deduped
    out = _read(result["output_dir"])
    kept = set(out["id"].to_pylist())
    survivors = [i for i in best_ids if i in kept]
    assert survivors == [best_id]
    size = out.filter(pa.compute.equal(out["id"], best_id))["dup_cluster_size"].to_pylist()
    assert size == [6]


def test_ties_keep_the_smallest_id(deduped):
    _, _, result, _, _, tie_ids = deduped
    kept = set(_read(result["output_dir"])["id"].to_pylist())
    assert [i for i in tie_ids if i in kept] == [min(tie_ids)]


def test_distinct_documents_untouched_and_schema_kept(deduped):
    _, table, result, best_ids, _, tie_ids = deduped
    out = _read(result["output_dir"])
    assert out.schema.remove_metadata().equals(table.schema)
    planted = set(best_ids) | set(tie_ids)
    others = set(table["id"].to_pylist()) - planted
    assert others <= set(out["id"].to_pylist())
    assert out.num_rows == table.num_rows - 5 - 2
    assert result["removed"] == 7 and result["clusters"] == 2
    unclustered = out.filter(pa.compute.is_in(out["id"], pa.array(sorted(others))))
    assert set(unclustered["dup_cluster_size"].to_pylist()) == {1}
    # the kept rows are unchanged, value for value
    original = table.filter(pa.compute.is_in(table["id"], pa.array(sorted(others)))).sort_by("id")
    assert unclustered.sort_by("id").equals(original)


def test_refresh_dedups_new_documents_against_the_published_index(deduped, tmp_path):
    ctx, table, result, _, best_id, _ = deduped
    index = tmp_path / "state" / "minhash" / "gen-1"
    assert commit_index(result["index_dir"], index) > 0
    assert commit_index(result["index_dir"], index) == 0  # idempotent
    rng = np.random.default_rng(11)
    published = _read(result["output_dir"])
    old_text = published.filter(pa.compute.equal(published["id"], best_id))["text"][0].as_py()
    fresh = random_texts(20, rng)
    new_texts = [_edit(old_text, rng, 2)] + fresh
    scores = {d: np.full(len(new_texts), 0.99) for d in DIMENSIONS}  # higher than the published copy
    new = make_scored_table(len(new_texts), seed=3, texts=new_texts, scores=scores, start=10_000)
    write_scored(tmp_path / "new", new, files=2)
    refreshed = dedup_against_index(ctx, tmp_path / "new", index_dir=index, stage="dedup_refresh_test")
    kept = _read(refreshed["output_dir"])
    assert refreshed["index_matches"] == 1
    assert set(kept["id"].to_pylist()) == set(new["id"].to_pylist()[1:])


def test_index_with_other_settings_is_refused(deduped, tmp_path):
    ctx, _, result, _, _, _ = deduped
    other = ctx.config.model_copy(deep=True)
    other.dedup.num_buckets = 7
    ctx2 = RunContext(config=other, client=ctx.client, run_id="run-other")
    write_scored(tmp_path / "new", make_scored_table(5, seed=5), files=1)
    index = tmp_path / "index"
    commit_index(result["index_dir"], index)
    with pytest.raises(DedupError, match="other dedup settings"):
        dedup_against_index(ctx2, tmp_path / "new", index_dir=index)
    config_file = next(index.rglob("index_config.json"))
    config_file.write_text("{truncated")
    with pytest.raises(DedupError, match=f"{re.escape(str(config_file))}: unreadable"):
        dedup_against_index(ctx, tmp_path / "new", index_dir=index)


def test_missing_column_names_the_file(tmp_path, dask_client):
    table = make_scored_table(5).drop_columns(["prosocial"])
    write_scored(tmp_path / "bad", table)
    ctx = RunContext(config=CorpusConfig(out=tmp_path / "out"), client=dask_client, run_id="run-bad")
    ctx.results["curate"] = {"output_dir": str(tmp_path / "bad")}
    with pytest.raises(DedupError, match=r"00000\.parquet: missing column\(s\) \['prosocial'\]"):
        run_dedup(ctx)


def _index_records(bucket, config) -> list[tuple]:
    """Every record of a bucket folder, read by datatrove's own index reader."""
    from datatrove.io import get_datafolder
    from datatrove.pipeline.dedup.minhash import read_sigs

    folder = get_datafolder(str(bucket))
    files = folder.list_files()
    return [
        sig.sig
        for i, f in enumerate(folder.open_files(files, mode="rb"))
        for sig in read_sigs(f, i, config, index_file=True)
    ]


def test_a_compacted_index_dedups_like_the_files_it_merged(deduped, tmp_path):
    """A year of nightly refreshes would leave ~365 files per bucket; merged, they must still catch copies."""
    from pipelines.dedup.compact import compact_index
    from pipelines.dedup.stage import minhash_config

    ctx, _, result, _, _, _ = deduped
    rng = np.random.default_rng(13)
    second = make_scored_table(30, seed=9, texts=random_texts(30, rng, 220, 220), start=20_000)
    write_scored(tmp_path / "second", second, files=2)
    second_result = dedup_against_index(ctx, tmp_path / "second", index_dir=None, stage="dedup_second")
    index = tmp_path / "index"
    for prefix, staged in (("a", result["index_dir"]), ("b", second_result["index_dir"])):
        commit_index(staged, tmp_path / f"staged-{prefix}")
        for path in sorted((tmp_path / f"staged-{prefix}").rglob("*.minhash.index")):
            target = index / path.parent.name / f"{prefix}--{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (index / "index_config.json").write_bytes((tmp_path / "staged-a" / "index_config.json").read_bytes())
    config = minhash_config(ctx.config.dedup)
    buckets = sorted(index.glob("bucket_*"))
    assert len(buckets) == ctx.config.dedup.num_buckets and all(len(list(b.iterdir())) == 2 for b in buckets)
    before = {b.name: _index_records(b, config) for b in buckets}

    assert compact_index(index, max_files=2, name="gen-3") == 0  # not crowded yet
    assert compact_index(index, max_files=1, name="gen-3") == len(buckets)
    for bucket in buckets:
        assert [p.name for p in bucket.iterdir()] == ["gen-3--compacted.minhash.index"]
        merged = _index_records(bucket, config)
        assert merged == sorted(set(before[bucket.name])) and len(merged) > 30
    assert compact_index(index, max_files=1, name="gen-4") == 0

    # a near-duplicate of a document of the second batch is caught by the merged index
    text = second["text"][4].as_py()
    copy = make_scored_table(1, seed=11, texts=[_edit(text, rng, 2)], start=30_000)
    write_scored(tmp_path / "copy", copy, files=1)
    caught = dedup_against_index(ctx, tmp_path / "copy", index_dir=index, stage="dedup_copy")
    assert caught["index_matches"] == 1 and caught["documents_out"] == 0

    # the state store builds a generation on links to the previous one; merging must leave that one as it was
    from pipelines.publish.state import StateError, StateStore, _build_index

    store = StateStore(tmp_path / "state")
    (index / "bucket_000" / "late.minhash.index").write_bytes(b"")  # two files in one bucket: over the limit
    previous = {p: p.read_bytes() for p in index.rglob("*.minhash.index")}
    _build_index(store, "g5", index, None, 1)
    assert {p: p.read_bytes() for p in index.rglob("*.minhash.index")} == previous
    assert [p.name for p in (store.index_root / "g5" / "bucket_000").iterdir()] == [
        "g5--compacted.minhash.index"
    ]
    assert _index_records(store.index_root / "g5" / "bucket_000", config) == sorted(set(before["bucket_000"]))

    # a truncated file is named, not merged into a silently shorter index; the store refuses the generation
    victim = buckets[0] / "gen-3--compacted.minhash.index"
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(DedupError, match=f"{re.escape(str(victim))}: .* not a whole number"):
        compact_index(index, max_files=1, name="gen-6")
    with pytest.raises(StateError, match="cannot build MinHash index generation g6: .* not a whole number"):
        _build_index(store, "g6", index, None, 1)


def test_folder_names_with_glob_characters_are_read_literally(tmp_path, dask_client):
    """datatrove's reader globbed `<folder>/*.parquet`, so OUT=/data/out[v2] failed after curate had finished."""
    rng = np.random.default_rng(3)
    texts = random_texts(30, rng, 60, 80)
    texts[1] = texts[0]
    write_scored(tmp_path / "scored[1]", make_scored_table(30, seed=2, texts=texts), files=2)
    ctx = RunContext(config=CorpusConfig(out=tmp_path / "out[v2]"), client=dask_client, run_id="run-glob")
    ctx.results["curate"] = {"output_dir": str(tmp_path / "scored[1]")}
    result = run_dedup(ctx)
    assert result["removed"] == 1 and _read(result["output_dir"]).num_rows == 29
