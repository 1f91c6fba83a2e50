"""Settings of the mix stage (the `mix:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_epochs: int = Field(4, ge=1, description="Hard cap on copies of one document (Muennighoff et al. 2023).")
    seed: int = Field(0, description="Seed of the deterministic shuffle.")
