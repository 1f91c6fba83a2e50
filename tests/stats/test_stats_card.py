"""The dataset card of real published versions: YAML header, licences, counts, and load_dataset via configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def test_card_header_configs_licence_and_counts(corpus_out):
    version = corpus_out["out"] / "versions" / "v2"
    text = (version / "README.md").read_text()
    header = _header(text)
    assert header["configs"] == [
        {
            "config_name": "pretrain",
            "data_files": [{"split": "train", "path": "pretrain/*.parquet"}],
            "default": True,
        }
    ]
    assert header["license"] == "mit"  # from the LICENSE file next to the inputs
    assert header["language"] == ["en"]
    assert header["pretty_name"] == "prosocial-corpus v2"
    rows = pq.ParquetDataset(version / "pretrain").read(columns=["id"]).num_rows
    line = next(x for x in text.splitlines() if x.startswith("| mix | pretrain | version |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == f"{rows:,}"  # stage, dataset, location, shards, rows, ...
    assert str(corpus_out["inputs"]) in text and "| mit |" in text
    assert "lid.176" in text and "CC BY-SA 3.0" in text
    bundle_version = json.loads((_bundle(corpus_out) / "manifest.json").read_text())["version"]
    assert f"version `{bundle_version}`" in text
    assert "| care | calib |" in text  # classifier metrics
    assert "### `default` -> `pretrain/` (primary)" in text
    assert "## Changes since `v1`" in text
    assert "load_dataset(" in text


def _bundle(corpus_out) -> Path:
    manifest = json.loads((corpus_out["out"] / "versions" / "v2" / "manifest.json").read_text())
    return Path(manifest["config"]["classifier"]["bundle"])


def test_load_dataset_uses_only_the_card_configs(corpus_out, offline_hf, tmp_path):
    """A copy of the version folder (stats/, manifest, mixture.json included) loads through the card alone."""
    from datasets import load_dataset

    version = tmp_path / "v2"
    shutil.copytree(corpus_out["out"] / "versions" / "v2", version)
    expected = pq.ParquetDataset(version / "pretrain").read()
    dataset = load_dataset(str(version), "pretrain", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.num_rows == expected.num_rows
    assert set(dataset.column_names) == set(expected.column_names)
    assert sorted(dataset["id"]) == sorted(expected.column("id").to_pylist())
    default = load_dataset(str(version), split="train")  # the default config is pretrain
    assert default.num_rows == expected.num_rows
    # every split the card declares is well formed for `datasets` (else it warns "malformed" on each load)
    header = yaml.safe_load((version / "README.md").read_text().split("---")[1])
    splits = [s for info in header["dataset_info"] for s in info["splits"]]
    assert splits and all(s["num_bytes"] > 0 and s["num_examples"] > 0 for s in splits)
    # the named config comes from the card alone: without it, datasets knows no "pretrain" config
    (version / "README.md").write_text("# no configs\n")
    with pytest.raises(ValueError, match="pretrain"):
        load_dataset(str(version), "pretrain", split="train", cache_dir=str(tmp_path / "hf-cache"))


def test_publisher_licence_overrides_detection(corpus_out):
    from pipelines.config import CorpusConfig
    from pipelines.stats.card import render_card

    version = corpus_out["out"] / "versions" / "v2"
    manifest = json.loads((version / "manifest.json").read_text())
    config = CorpusConfig.model_validate(
        {**manifest["config"], "publish": {"license": ["odc-by", "cc-by-4.0"]}}
    )
    text = render_card(version, config, version_id="v2", parent="v1")
    assert _header(text)["license"] == ["odc-by", "cc-by-4.0"]
    assert "Licence set by the publisher (`publish.license`): odc-by, cc-by-4.0." in text
    assert "| mit |" in text  # the detected licence of each source is still listed


def test_same_folder_name_different_data_never_share_a_cache_entry(corpus_out, offline_hf, tmp_path):
    """`datasets` keys local folders by name and card: the card's dataset_info keeps two `v2`s apart."""
    from datasets import load_dataset

    cache = str(tmp_path / "shared-cache")  # one cache for both, as on a user's machine
    for source, parent in (("v1", "first"), ("v2", "second")):
        copy = tmp_path / parent / "v2"
        shutil.copytree(corpus_out["out"] / "versions" / source, copy)
        expected = pq.ParquetDataset(copy / "pretrain").read(columns=["id"]).column("id").to_pylist()
        loaded = load_dataset(str(copy), "pretrain", split="train", cache_dir=cache)
        assert sorted(loaded["id"]) == sorted(expected), f"{source} copy served from another version's cache"


def test_licences_count_every_profile_folder(tmp_path):
    """A source that only a second profile's tiers keep still gets its licence on the card."""
    import pyarrow as pa

    from pipelines.stats.card import source_licenses

    for name, text in (
        ("a", "MIT License\n\nPermission is hereby granted"),
        ("b", "Apache License\nVersion 2.0"),
    ):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "LICENSE").write_text(text)
    version = tmp_path / "v1"
    a, b = str(tmp_path / "in" / "a" / "x.jsonl"), str(tmp_path / "in" / "b" / "y.jsonl")
    for folder, ids, sources, repeat in (
        ("pretrain", ["a1", "a2", "a3", "a3"], [a, a, a, a], [0, 0, 0, 1]),
        ("pretrain_civic", ["a1", "b1"], [a, b], [0, 0]),
    ):
        (version / folder).mkdir(parents=True)
        table = pa.table({"id": ids, "source": sources, "repeat_index": pa.array(repeat, pa.int16())})
        pq.write_table(table, version / folder / "train-00000-of-00001.parquet")
    frame = source_licenses(version, [str(tmp_path / "in")])
    got = dict(zip(frame["source"].map(lambda s: Path(s).name), frame["documents"], strict=True))
    assert got == {"a": 3, "b": 1}  # distinct documents, not copies, and not summed over profiles
    assert len(set(frame["license"])) == 2


def test_size_categories_cover_every_scale():
    from pipelines.stats.card import size_category

    assert size_category(999) == "n<1K" and size_category(5 * 10**9) == "1B<n<10B"
    assert size_category(15 * 10**10) == "100B<n<1T" and size_category(2 * 10**12) == "n>1T"
    assert size_category(5 * 10**10) == "10B<n<100B"
