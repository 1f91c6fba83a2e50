"""Folding the refresh state's kept-shard batches: same documents, same row groups, same mixture."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipelines.mix.sample_data import make_scored_table, write_scored
from pipelines.mix.settings import MixConfig
from pipelines.mix.stage import mix_scored
from pipelines.parquet import parquet_paths
from pipelines.publish.shard_compaction import fold_batches


def _batches(root, sizes=(300, 40, 7, 120)):
    folders, start = [], 0
    for i, n in enumerate(sizes):
        folder = root / f"run-{i}-v{i + 1}"
        write_scored(folder, make_scored_table(n, seed=i, start=start), files=1 + i % 2)
        folders.append(folder)
        start += n
    return folders


def test_folded_batches_hold_the_same_rows_in_larger_files_and_mix_the_same(tmp_path, dask_client):
    batches = _batches(tmp_path / "shards")
    source_files = [f for b in batches for f in parquet_paths(b)]
    target = tmp_path / "shards" / "run-3-v4-folded"
    files = fold_batches(batches, target, file_bytes=40_000)
    assert files is not None and 1 < files < len(source_files)
    folded = parquet_paths(target)
    assert len(folded) == files and not any(p.name.startswith(".") for p in target.iterdir())
    # the same rows in the same order, and every source row group kept whole
    assert pq.read_table(folded).equals(pq.read_table(source_files))
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in folded]
    assert sum(groups) == sum(pq.ParquetFile(f).metadata.num_row_groups for f in source_files)
    # the mix places copies by document id, not by file: the folded batch gives byte-identical shards
    config = MixConfig(seed=3, shard_mb=0.05)
    mix_scored(batches, tmp_path / "from-batches", ["default"], config, dask_client)
    mix_scored(target, tmp_path / "from-folded", ["default"], config, dask_client)
    mixed = sorted((tmp_path / "from-batches" / "pretrain").iterdir())
    assert len(mixed) > 1
    for path in mixed:
        assert path.read_bytes() == (tmp_path / "from-folded" / "pretrain" / path.name).read_bytes(), (
            path.name
        )


def test_batches_with_other_schemas_are_left_as_they_are(tmp_path):
    batches = _batches(tmp_path / "shards", sizes=(20, 20))
    path = parquet_paths(batches[1])[0]
    pq.write_table(pq.read_table(path).drop_columns(["crawl_date"]), path)
    target = tmp_path / "shards" / "folded"
    assert fold_batches(batches, target, file_bytes=1 << 20) is None
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [b.name for b in batches]


def test_fold_if_needed_folds_the_newest_schema_and_survives_a_damaged_file(tmp_path):
    from pipelines.publish.state import State, StateStore, fold_if_needed

    store = StateStore(tmp_path / "state")
    batches = _batches(store.shards_root, sizes=(30, 30, 30, 30))
    old = parquet_paths(batches[0])[0]  # a batch from before an upgrade that changed the columns
    pq.write_table(pq.read_table(old).drop_columns(["crawl_date"]), old)
    state = State(version="v4", batches=[b.name for b in batches])
    store.save(state)
    assert fold_if_needed(store, state, max_batches=4, file_mb=1) is state  # not over the limit
    folded = fold_if_needed(store, state, max_batches=2, file_mb=1)
    assert folded.batches == [batches[0].name, f"{batches[-1].name}-folded"]
    assert store.load().batches == folded.batches
    assert pq.read_table(parquet_paths(store.shards_root / folded.batches[1])).num_rows == 90

    # a damaged file: the commit stands unfolded (the fold only saves reads) and nothing is left behind
    state = State(version="v5", batches=[b.name for b in batches[1:]])
    store.save(state)
    (store.shards_root / f"{batches[-1].name}-folded").rename(tmp_path / "set-aside")
    damaged = parquet_paths(batches[2])[0]
    damaged.write_bytes(damaged.read_bytes()[:50])
    assert fold_if_needed(store, state, max_batches=2, file_mb=1) is state
    assert store.load().batches == state.batches
    assert not any(p.name.endswith("-folded") or p.name.startswith(".") for p in store.shards_root.iterdir())
