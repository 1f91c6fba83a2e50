"""Session-wide fixtures: one real Dask LocalCluster, the real-data folder, scratch folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROSOCIAL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`; tests that need it are skipped (with the reason) on machines without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dask_client(tmp_path_factory):
    """One 2-worker LocalCluster for the whole session (processes, 1 thread each, non-daemonic)."""
    from pipelines.cluster import ClusterConfig, connect

    scratch = tmp_path_factory.mktemp("dask")
    with connect(ClusterConfig(n_workers=2, local_directory=str(scratch))) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory) -> Path:
    """One tiny real fastText bundle for the session (kind words score high, hostile words low; about 2 s).

    Tests that change a bundle copy it first."""
    from classifiers.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
