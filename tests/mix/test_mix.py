"""The mix stage on the real Dask cluster: epoch cap, solved shares, determinism, spread of copies."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifiers.profiles import Profile, ProfileError, Tier, load_profile
from pipelines.config import CorpusConfig
from pipelines.context import RunContext
from pipelines.graph import run_summary
from pipelines.mix.sample_data import DIMENSIONS, make_scored_table, write_scored
from pipelines.mix.settings import MixConfig
from pipelines.mix.stage import MixError, mix_scored, run_mix
from pipelines.parquet import write_table_atomic
from pipelines.publish.state import read_journal, write_journal

SLOW = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _scored(folder: Path, n: int, seed: int, files: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(20, 400, size=n)
    write_scored(
        folder, make_scored_table(n, seed=seed, token_counts=tokens, min_words=5, max_words=12), files=files
    )
    return pq.read_table(folder).to_pandas()


def _equal_weights(name: str, tiers: list[Tier], share: float | None = None) -> Profile:
    return Profile(name=name, weights={d: 1.0 for d in DIMENSIONS}, tiers=tiers, top_tier_share=share)


def _profile(factors: list[float], share: float | None = None) -> Profile:
    # thresholds at quantiles of the Beta(2,2) mean-of-four scores, so every tier holds many documents
    mins = [0.6, 0.5, 0.4, 0.0][: len(factors)]
    mins[-1] = 0.0
    tiers = [
        Tier(name=f"t{i}", min_score=m, factor=f) for i, (m, f) in enumerate(zip(mins, factors, strict=True))
    ]
    return _equal_weights("prop", tiers, share)


def _output(staging: Path, folder: str = "pretrain") -> tuple[pd.DataFrame, dict]:
    files = sorted((staging / folder).glob("*.parquet"))
    frames = []
    for shard, path in enumerate(files):
        df = pq.read_table(path).to_pandas()
        df["_shard"] = shard
        df["_row"] = np.arange(len(df))
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["_stream"] = np.arange(len(out))  # position in the concatenated shard order
    return out, json.loads((staging / "mixture.json").read_text())


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scored")
    return folder, _scored(folder, 2500, seed=3)


@st.composite
def mix_cases(draw):
    n_tiers = draw(st.integers(2, 4))
    factors = [draw(st.sampled_from([0.5, 1.0, 1.3, 2.0, 2.7, 3.0, 5.0])) for _ in range(n_tiers - 1)]
    factors.append(draw(st.sampled_from([0.0, 0.4, 1.0])))
    cap = draw(st.integers(1, 4))
    share = draw(st.none() | st.sampled_from([0.2, 0.35, 0.5]))
    budget = draw(st.none() | st.sampled_from([150_000, 300_000, 600_000]))
    seed = draw(st.integers(0, 2**31))
    return factors, cap, share, budget, seed


@SLOW
@given(case=mix_cases())
def test_cap_and_solved_shares(scored, dask_client, case):
    folder, inputs = scored
    factors, cap, share, budget, seed = case
    profile = _profile(factors, share)
    cfg = MixConfig(max_epochs=cap, seed=seed, token_budget=budget, shard_mb=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        mix_scored(folder, Path(tmp), [profile], cfg, dask_client)
        out, mixture = _output(Path(tmp))
    entry = mixture["profiles"]["prop"]
    # no document more often than the cap, and copies are numbered 0..c-1
    copies = out.groupby("id")["repeat_index"].agg(["count", "max", "nunique"])
    assert copies["count"].max() <= cap
    assert (copies["max"] + 1 == copies["count"]).all() and (copies["nunique"] == copies["count"]).all()
    # every row is a real input document with its profile's tier
    merged = out.merge(inputs[["id", "text"]], on="id", suffixes=("", "_in"))
    assert len(merged) == len(out) and (merged["text"] == merged["text_in"]).all()
    # realised token shares per tier match the solver's targets within 1% (relative). A tier can only take
    # whole documents, so a tier whose fractional copies are a handful of documents may be off by up to one
    # document's tokens; that granularity is the only other slack allowed.
    tokens = out.groupby("tier")["token_count"].sum()
    total = tokens.sum()
    one_document = inputs["token_count"].max() / total
    for tier in entry["tiers"]:
        realised = tokens.get(tier["name"], 0) / total
        if tier["target_share"] > 0:
            tolerance = max(0.01 * tier["target_share"], one_document)
            assert abs(realised - tier["target_share"]) <= tolerance, (tier, entry["notes"])
        else:
            assert realised == 0
        assert tier["max_copies"] <= cap
    if budget is not None and entry["feasible"]:
        assert total == pytest.approx(budget, rel=0.01)
    if share is not None and entry["feasible"]:
        assert tokens.get("t0", 0) / total == pytest.approx(share, rel=0.01)


def test_same_seed_gives_identical_bytes_whatever_the_partitioning(scored, dask_client, tmp_path):
    folder, _ = scored
    profiles = ["default", "civic"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    mix_scored(folder, a, profiles, MixConfig(seed=5, shard_mb=0.05), dask_client)
    mix_scored(folder, b, profiles, MixConfig(seed=5, shard_mb=0.05, blocksize="64KB"), dask_client)
    mix_scored(folder, c, profiles, MixConfig(seed=6, shard_mb=0.05), dask_client)
    for sub in ("pretrain", "pretrain_civic"):
        files_a = sorted(p.name for p in (a / sub).iterdir())
        assert files_a == sorted(p.name for p in (b / sub).iterdir()) and len(files_a) > 1
        for name in files_a:
            assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes(), name
    ma, mb = (json.loads((x / "mixture.json").read_text()) for x in (a, b))
    assert ma["profiles"] == {k: v for k, v in mb["profiles"].items()}
    # another seed gives another order
    first = sorted((a / "pretrain").glob("*.parquet"))[0]
    other = sorted((c / "pretrain").glob("*.parquet"))[0]
    assert first.read_bytes() != other.read_bytes()


def test_copies_are_spread_across_shards_and_through_the_stream(scored, dask_client, tmp_path):
    folder, _ = scored
    profile = _profile([4.0, 3.0, 2.0, 1.0])
    mix_scored(folder, tmp_path, [profile], MixConfig(seed=1, shard_mb=0.05), dask_client)
    out, mixture = _output(tmp_path)
    assert mixture["profiles"]["prop"]["shards"] >= 4
    n = len(out)
    assert (out.groupby("id").size() >= 2).sum() > 0.3 * out["id"].nunique()  # factors 4, 3, 2: most repeat
    for _, group in out.groupby("id"):
        c = len(group)
        if c < 2:
            continue
        assert group["_shard"].nunique() == c  # every copy in its own shard
        gaps = np.diff(np.sort(group["_stream"].to_numpy()))
        assert gaps.min() >= 0.5 * n / c  # evenly spaced copies: about n / c rows apart
    # copies are in stream order of repeat_index
    first = out.sort_values("_stream").groupby("id")["repeat_index"].first()
    assert (first == 0).all()


def test_rows_that_share_an_id_share_the_cap(dask_client, tmp_path):
    """A refresh with dedup off keeps a re-curated document twice (same id, another source offset); the mixture
    must still hold at most max_epochs copies of it, whatever the partitioning."""
    table = make_scored_table(300, seed=9, token_counts=np.full(300, 50), min_words=5, max_words=12)
    again = table.slice(0, 100)
    again = again.set_column(
        again.schema.get_field_index("source_offset"), "source_offset", pa.array(np.arange(100) + 10_000)
    )
    folder = tmp_path / "scored"
    write_scored(folder, pa.concat_tables([table, again]), files=4)
    profile = _profile([4.0, 4.0, 4.0, 4.0])
    outputs = []
    for name, blocksize in [("a", "64MB"), ("b", "16KB")]:
        mix_scored(
            folder,
            tmp_path / name,
            [profile],
            MixConfig(seed=2, shard_mb=0.05, blocksize=blocksize),
            dask_client,
        )
        outputs.append(_output(tmp_path / name))
    (out, mixture), (other, _) = outputs
    copies = out.groupby("id").size()
    assert copies.max() == 4 and len(copies) == 300
    assert mixture["profiles"]["prop"]["totals"]["duplicate_copies_dropped"] == 400
    # the copy kept is the first source offset's, on every partitioning
    kept = out.set_index("id")["source_offset"].groupby(level=0).max()
    assert (kept < 10_000).all()
    assert out.drop(columns=["_shard", "_row", "_stream"]).equals(
        other.drop(columns=["_shard", "_row", "_stream"])
    )


def test_profiles_from_one_scored_corpus(scored, dask_client, tmp_path):
    folder, inputs = scored
    ctx = RunContext(
        config=CorpusConfig(out=tmp_path / "out", profile=["default", "civic", "education"]),
        client=dask_client,
        run_id="run-mix",
    )
    ctx.results["dedup"] = {"output_dir": str(folder)}
    summary = run_mix(ctx)
    assert set(summary["profiles"]) == {"default", "civic", "education"}
    # the run summary's rows and tiers are the primary (first) profile's, after the journal's sorted-keys
    # round trip has put 'civic' first
    write_journal(tmp_path / "work", {"results": {"mix": summary}})
    top = run_summary(read_journal(tmp_path / "work"))
    assert summary["profiles"]["default"]["rows"] != summary["profiles"]["civic"]["rows"]
    assert top["mixture_rows"] == summary["profiles"]["default"]["rows"]
    assert top["tiers"] == summary["profiles"]["default"]["tiers"]
    for name, sub in (
        ("default", "pretrain"),
        ("civic", "pretrain_civic"),
        ("education", "pretrain_education"),
    ):
        profile = load_profile(name)
        out, mixture = _output(ctx.staging, sub)
        expected = profile.aggregate({d: out[f"ps_{d}"].to_numpy() for d in DIMENSIONS})
        np.testing.assert_array_equal(out["prosocial"].to_numpy(), expected)
        tiers = profile.tier_of(expected)
        assert (np.array([t.name for t in profile.tiers])[tiers] == out["tier"].to_numpy()).all()
        assert mixture["profiles"][name]["folder"] == sub
        assert str(out["repeat_index"].dtype) == "int16"
    civic = json.loads((ctx.staging / "mixture.json").read_text())["profiles"]["civic"]
    assert civic["top_tier_share"] == 0.30
    assert civic["tiers"][0]["share"] == pytest.approx(0.30, rel=0.01)
    assert sum(civic["blend"]["weights"].values()) == pytest.approx(1.0)
    # a rerun finds the same inputs and settings and does nothing
    stamp = (ctx.staging / "pretrain").stat().st_mtime_ns
    assert run_mix(ctx) == summary
    assert (ctx.staging / "pretrain").stat().st_mtime_ns == stamp


def test_mixture_loads_with_datasets(scored, dask_client, tmp_path):
    import datasets

    folder, _ = scored
    mix_scored(folder, tmp_path, ["default"], MixConfig(shard_mb=0.05), dask_client)
    ds = datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "pretrain"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert (
        ds.num_rows
        == json.loads((tmp_path / "mixture.json").read_text())["profiles"]["default"]["totals"]["rows"]
    )
    assert {"tier", "repeat_index", "prosocial"} <= set(ds.column_names)


def test_missing_dimension_column_names_file_and_profile(tmp_path, dask_client):
    table = make_scored_table(20).drop_columns(["ps_respect"])
    write_scored(tmp_path / "in", table)
    with pytest.raises(
        MixError, match=r"00000\.parquet: missing column\(s\) \['ps_respect'\] needed by profile"
    ):
        mix_scored(tmp_path / "in", tmp_path / "out", ["civic"], MixConfig(), dask_client)


@pytest.mark.parametrize("factors", [[3.0, 2.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
def test_tiny_and_empty_mixtures(tmp_path, dask_client, factors):
    write_scored(tmp_path / "in", make_scored_table(3, seed=2), files=1)
    mix_scored(tmp_path / "in", tmp_path / "out", [_profile(factors)], MixConfig(), dask_client)
    out, mixture = _output(tmp_path / "out") if any(factors) else (None, None)
    entry = json.loads((tmp_path / "out" / "mixture.json").read_text())["profiles"]["prop"]
    assert (
        entry["shards"] == len(entry["files"]) == len(list((tmp_path / "out" / "pretrain").glob("*.parquet")))
    )
    if any(factors):
        assert len(out) == entry["totals"]["rows"] >= 3
        for shard in (tmp_path / "out" / "pretrain").glob("*.parquet"):  # copies never share a file
            ids = pq.read_table(shard, columns=["id"]).column("id").to_pylist()
            assert len(ids) == len(set(ids))
    else:
        assert entry["shards"] == 1 and entry["totals"]["rows"] == 0
        assert pq.read_table(tmp_path / "out" / "pretrain").num_rows == 0


@pytest.mark.parametrize(
    ("documents", "factor", "shard_mb"), [(1, 3.0, 256.0), (1, 3.5, 256.0), (200, 0.5, 0.001)]
)
def test_shard_count_follows_copies_and_fractional_factors(
    tmp_path, dask_client, documents, factor, shard_mb
):
    """One document at factor 3 is three rows in three files; factors below 1 still fill `shard_mb` files."""
    table = make_scored_table(documents, seed=1, scores={d: np.full(documents, 0.9) for d in DIMENSIONS})
    write_scored(tmp_path / "in", table, files=1)
    profile = _equal_weights("p", [Tier(name="all", min_score=0.0, factor=factor)])
    mix_scored(tmp_path / "in", tmp_path / "out", [profile], MixConfig(shard_mb=shard_mb), dask_client)
    entry = json.loads((tmp_path / "out" / "mixture.json").read_text())["profiles"]["p"]
    shards = sorted((tmp_path / "out" / "pretrain").glob("*.parquet"))
    ids = [pq.read_table(f, columns=["id"]).column("id").to_pylist() for f in shards]
    assert all(len(i) == len(set(i)) for i in ids), "copies of a document share a file"
    assert sum(map(len, ids)) == entry["totals"]["rows"]
    if documents == 1:
        assert (
            entry["totals"]["rows"] == int(factor) and len(shards) >= 3
        )  # 3.5: the half copy went elsewhere
    else:
        plain = tmp_path / "plain"
        one = _equal_weights("p", [Tier(name="all", min_score=0.0, factor=1.0)])
        mix_scored(tmp_path / "in", plain, [one], MixConfig(shard_mb=shard_mb), dask_client)
        per_row = len(list((plain / "pretrain").glob("*.parquet"))) / documents
        assert len(shards) >= 0.3 * per_row * entry["totals"]["rows"] > 1


def test_quantile_tiers_hold_their_share_of_documents(scored, dask_client, tmp_path):
    """Tiers given as quantiles resolve over the documents mixed: the top 10 % stay the top 10 % whatever the
    classifier's score scale, and mixture.json records both the quantile and the score it resolved to."""
    folder, inputs = scored
    profile = _equal_weights(
        "q",
        [
            Tier(name="top", min_quantile=0.9, factor=2.0),
            Tier(name="mid", min_quantile=0.5, factor=1.0),
            Tier(name="rest", min_score=0.0, factor=0.0),
        ],
    )
    mix_scored(folder, tmp_path, [profile], MixConfig(), dask_client)
    out, mixture = _output(tmp_path)
    entry = {t["name"]: t for t in mixture["profiles"]["q"]["tiers"]}
    scores = profile.aggregate({d: inputs[f"ps_{d}"].to_numpy() for d in DIMENSIONS})
    for name, q in (("top", 0.9), ("mid", 0.5)):
        assert entry[name]["min_quantile"] == q
        # the resolved score is the q-quantile of the inputs' aggregate, to the histogram's resolution
        assert entry[name]["min_score"] == pytest.approx(np.quantile(scores, q), abs=2e-4)
    assert entry["top"]["documents"] == pytest.approx(0.1 * len(inputs), abs=0.01 * len(inputs))
    assert entry["top"]["documents"] + entry["mid"]["documents"] == pytest.approx(
        0.5 * len(inputs), abs=0.01 * len(inputs)
    )
    # rows carry the tier their score earns under the resolved thresholds
    originals = out[out["repeat_index"] == 0]
    top = originals["prosocial"].to_numpy() >= entry["top"]["min_score"]
    assert (originals["tier"].to_numpy()[top] == "top").all()
    assert (originals["tier"].to_numpy()[~top] == "mid").all()  # "rest" has factor 0


def test_quantile_tiers_that_cross_an_absolute_one_are_refused(scored, dask_client, tmp_path):
    folder, _ = scored
    profile = _equal_weights(
        "crossed",
        [
            Tier(name="top", min_score=0.99, factor=2.0),
            Tier(name="mid", min_quantile=0.5, factor=1.0),
            Tier(name="high-floor", min_score=0.9, factor=1.0),
        ],
    )
    with pytest.raises(ProfileError, match=r"profile 'crossed': tiers out of order once quantiles"):
        mix_scored(folder, tmp_path, [profile], MixConfig(), dask_client)


def test_a_tier_needs_exactly_one_threshold(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "weights: {care: 1}\ntiers:\n  - {name: top, min_score: 0.5, min_quantile: 0.9, factor: 2}\n"
    )
    with pytest.raises(ProfileError, match=r"p\.yaml.*exactly one of min_score and min_quantile"):
        load_profile(str(path))


def test_folder_names_with_glob_characters_are_read_literally(dask_client, tmp_path):
    """Dask expands every listed path as a glob: OUT=/data/out[v2] read nothing, then failed on its columns."""
    write_scored(tmp_path / "in[1]", make_scored_table(40, seed=4), files=2)
    summary = mix_scored(tmp_path / "in[1]", tmp_path / "out[v2]", ["default"], MixConfig(), dask_client)
    assert summary["documents_in"] == 40
    assert (
        sum(pq.read_metadata(f).num_rows for f in (tmp_path / "out[v2]" / "pretrain").glob("*.parquet")) > 0
    )


def test_an_empty_scored_shard_mixes_with_the_others(dask_client, tmp_path):
    """Dedup can empty a shard (every document a near-duplicate of another file's); its partition's stats were
    int64 and merging the next partition into them failed, so the run and every later refresh stopped."""
    table = make_scored_table(30, seed=5)
    write_table_atomic(table.slice(0, 0), tmp_path / "in" / "00000.parquet")
    write_table_atomic(table, tmp_path / "in" / "00001.parquet")
    summary = mix_scored(tmp_path / "in", tmp_path / "out", ["default"], MixConfig(), dask_client)
    assert summary["documents_in"] == 30 and summary["profiles"]["default"]["rows"] > 0


def test_an_unreachable_mixture_is_said_in_the_log(scored, dask_client, tmp_path):
    """mixture.json said feasible: false, but nothing a user reads did: the run quietly gave fewer tokens."""
    from datatrove.utils.logging import logger

    folder, _ = scored
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        mix_scored(
            folder, tmp_path, [_profile([2.0, 1.0, 1.0, 1.0])], MixConfig(token_budget=10**10), dask_client
        )
    finally:
        logger.remove(sink)
    assert json.loads((tmp_path / "mixture.json").read_text())["profiles"]["prop"]["feasible"] is False
    assert any("profile prop: the requested mixture cannot be met (token_budget" in m for m in messages), (
        messages
    )


def test_rows_without_an_id_mix(dask_client, tmp_path):
    """An outside table may lack ids: nulls compare equal in the duplicate check instead of crashing it."""
    table = make_scored_table(60, seed=8, token_counts=np.full(60, 40))
    ids = table.column("id").to_pylist()
    ids[:4] = [None] * 4
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    write_scored(tmp_path / "in", table, files=2)
    profile = _profile([2.0, 2.0, 2.0, 2.0])
    mix_scored(tmp_path / "in", tmp_path / "out", [profile], MixConfig(), dask_client)
    out, mixture = _output(tmp_path / "out")
    assert out["id"].isna().sum() == 2  # the four id-less rows are one document: two copies
    assert mixture["profiles"]["prop"]["totals"]["duplicate_copies_dropped"] == 6


def test_a_damaged_data_page_names_its_file(dask_client, tmp_path):
    """The footer reads, a page does not: the error came out of Dask as ZSTD's, naming no file."""
    files = write_scored(tmp_path / "in", make_scored_table(300, seed=6), files=3)
    data = bytearray(files[1].read_bytes())
    data[200:1200] = bytes(range(256)) * 3 + bytes(232)  # inside the first row group's pages
    files[1].write_bytes(bytes(data))
    pq.read_metadata(files[1])  # the footer is intact
    with pytest.raises(MixError, match=re.escape(f"{files[1]}: cannot be read (")):
        mix_scored(tmp_path / "in", tmp_path / "out", ["default"], MixConfig(), dask_client)
