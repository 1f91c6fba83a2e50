"""Fixtures of the classifier tests: the session's tiny bundle (tests/conftest.py), loaded."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_path):
    from classifiers.bundle import load_bundle

    return load_bundle(tiny_bundle_path)
