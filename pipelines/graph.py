"""The stage graph of `corpus run`: curate -> dedup -> mix -> synthesize -> publish.

A run's work folder is keyed by a hash of its config, so rerunning the same command after a crash resumes it
(datatrove completion markers skip finished ranks) instead of starting over. Nothing is visible to readers
until publish renames the verified version into place and flips `latest`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from datatrove.utils.logging import logger

from pipelines.cluster import connect
from pipelines.config import CorpusConfig, dump_config
from pipelines.context import RunContext


def config_hash(config: CorpusConfig) -> str:
    """Hash of everything that changes the output (not where or how it is computed)."""
    data = dump_config(config)
    for volatile in ("cluster",):
        data.pop(volatile, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def run_graph(config: CorpusConfig, run_id: str | None = None) -> dict[str, Any]:
    """Run every stage on the configured cluster and publish a version; return the run summary."""
    from pipelines.curate.stage import preflight, run_curate
    from pipelines.dedup.stage import run_dedup
    from pipelines.mix.stage import run_mix
    from pipelines.publish.publish import publish_run
    from pipelines.synthesize import run_synthesize

    preflight(config)  # fail on missing inputs, models and profiles before starting a cluster
    run_id = run_id or f"run-{config_hash(config)[:12]}"
    start = time.time()
    with connect(config.cluster) as client:
        ctx = RunContext(config=config, client=client, run_id=run_id)
        logger.info(f"run {run_id}: work folder {ctx.work}")
        ctx.results["curate"] = run_curate(ctx, config.input)
        ctx.results["dedup"] = run_dedup(ctx)
        ctx.results["mix"] = run_mix(ctx)
        ctx.results["synthesize"] = run_synthesize(ctx)
        version = publish_run(ctx)
    finished = config.work_dir / "done" / f"{run_id}-{version}"
    finished.parent.mkdir(parents=True, exist_ok=True)
    ctx.work.rename(finished)  # keeps the logs; the next identical `corpus run` starts a fresh version
    logger.info(f"run {run_id}: logs and intermediates kept in {finished}")
    return {"run_id": run_id, "version": version, "seconds": round(time.time() - start, 1), **ctx.results}
