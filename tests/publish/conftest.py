"""Fixtures of the refresh tests: a tiny real classifier bundle, a one-tier profile, and a published v1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from refresh_fixtures import PROFILE, base_overrides, corpus, summary_of, write_shard


@pytest.fixture(scope="session")
def flat_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "flat.yaml"
    path.write_text(PROFILE)
    return path


@pytest.fixture(scope="module")
def v1(tmp_path_factory, dask_client, tiny_bundle_path, flat_profile):
    """`corpus run` over one shard of 20 documents: OUT with v1 and its state store (copy it before changing it)."""
    root = tmp_path_factory.mktemp("v1")
    first = write_shard(root / "base" / "a.jsonl", list(range(20)))
    out = root / "out"
    overrides = base_overrides(out, first, tiny_bundle_path, flat_profile, dask_client.scheduler.address)
    summary = summary_of(corpus("run", overrides))
    return {"out": out, "first": first, "summary": summary, "address": dask_client.scheduler.address}


@pytest.fixture
def world(v1, tmp_path, tiny_bundle_path, flat_profile):
    """A private copy of the v1 output root, a folder for new shards, and `overrides(*extra)` for this copy."""
    out = tmp_path / "out"
    shutil.copytree(v1["out"], out, symlinks=True)
    new = tmp_path / "new"
    new.mkdir()

    def overrides(*extra: str, with_new: bool = True) -> list[str]:
        inputs = f"{v1['first']},{new}" if with_new else str(v1["first"])
        return base_overrides(out, inputs, tiny_bundle_path, flat_profile, v1["address"], *extra)

    return {"out": out, "new": new, "overrides": overrides, "first": v1["first"], "v1": v1}
