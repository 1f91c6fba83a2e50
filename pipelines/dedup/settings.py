"""Settings of the dedup stage (the `dedup:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run MinHash near-duplicate removal.")
