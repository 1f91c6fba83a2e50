"""Settings of prosocial scoring (the `classifier:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClassifierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    bundle: str = Field(
        "default", description="Model bundle folder, or 'default' for the bundle `make classifier` builds."
    )
    batch_size: int = Field(
        128,
        ge=1,
        description="Documents per batched predict in the scoring step; 128 documents (up to 64 chunks each) "
        "amortise fastText's per-call cost, larger batches only raise a worker's peak memory.",
    )
