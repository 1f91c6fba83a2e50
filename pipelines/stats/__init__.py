"""Shard statistics of published versions: tables, drift between versions, reports and dataset cards.

import pipelines.stats as stats
tables = stats.load("out")             # named pandas DataFrames of OUT/latest (or a version folder)
drift = stats.compare("out/versions/v1", "out/versions/v2")
"""

from __future__ import annotations

from typing import Any


def load(path: Any, version: str | None = None):
    """The stats tables of a version (see pipelines.stats.tables for what each holds)."""
    from pipelines.stats.tables import load as _load

    return _load(path, version)


def compare(v_old: Any, v_new: Any):
    """Drift between two versions (see pipelines.stats.drift)."""
    from pipelines.stats.drift import compare as _compare

    return _compare(v_old, v_new)


__all__ = ["compare", "load"]
