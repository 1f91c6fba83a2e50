"""Fixtures of the classifier tests: one tiny real fastText bundle per session (about 2 s to train)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory) -> Path:
    from classifiers.testing import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_path):
    from classifiers.bundle import load_bundle

    return load_bundle(tiny_bundle_path)
