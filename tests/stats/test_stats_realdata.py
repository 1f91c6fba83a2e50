"""Acceptance on real data: a `corpus run` over ../shared/data/web, stats reconciled with every file."""

from __future__ import annotations

import json

import pytest
from stats_helpers import reconcile, run_corpus, stage_results

import pipelines.stats as stats


@pytest.mark.realdata
@pytest.mark.slow
def test_stats_reconcile_on_the_shared_web_data(shared_data, dask_client, tiny_bundle_path, tmp_path):
    out = tmp_path / "out"
    summary = run_corpus(dask_client, out, [str(shared_data / "web")], tiny_bundle_path)
    problems, checked = reconcile(out, summary)
    assert not problems, "\n".join(problems)
    assert checked >= 6  # curate, dedup and mix shards at least
    tables = stats.load(out)
    stages = tables["stages"].set_index("stage")
    curate = stage_results(out, summary)["curate"]
    assert stages.loc["curate", "documents_in"] == curate["documents_in"] > 500
    assert stages.loc["curate", "rows"] == curate["documents_out"]
    assert stages.loc["curate", "dropped"] == sum(curate["dropped"].values())
    manifest = json.loads((out / "versions" / summary["version"] / "manifest.json").read_text())
    assert stages.loc["mix", "rows"] == manifest["totals"]["rows"]["pretrain"]
    reasons = set(tables["drops"].query("stage == 'curate'")["reason"])
    assert {"language", "exact_duplicate"} <= reasons  # German pages; the same page in several test sets
    print(f"reconciled {checked} shards; curate {curate['documents_in']} in -> {curate['documents_out']} out")
