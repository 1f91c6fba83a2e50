"""What every stage of a run receives: the validated config, the Dask client and the run's folders."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import CorpusConfig

if TYPE_CHECKING:
    from distributed import Client


@dataclass
class RunContext:
    """State shared by the stages of one `corpus run` / `corpus refresh`.

    `work` survives crashes (datatrove completion markers live there), so rerunning the same command with the
    same `run_id` resumes instead of starting over. `staging` is the version being built; publishing verifies
    it and renames it into `OUT/versions/<id>`.
    """

    config: CorpusConfig
    client: Client | None
    run_id: str
    started: float = field(default_factory=time.time)
    results: dict[str, Any] = field(default_factory=dict)
    mode: str = "full"  # "full" (`corpus run`: every input) or "refresh" (`corpus refresh`: new inputs only)

    @property
    def out(self) -> Path:
        return self.config.out

    @property
    def work(self) -> Path:
        return self.config.work_dir / self.run_id

    @property
    def staging(self) -> Path:
        return self.work / "version"

    def stage_dir(self, stage: str) -> Path:
        """`work/<run_id>/<stage>/`: the stage's datatrove logging dir and intermediate outputs."""
        path = self.work / stage
        path.mkdir(parents=True, exist_ok=True)
        return path
