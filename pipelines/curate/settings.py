"""Settings of the curate stage (the `curate:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    languages: list[str] = Field(default_factory=lambda: ["en"], description="Languages kept after language ID.")
    tasks: int = Field(0, ge=0, description="Ranks for the curate stage; 0 = one per input file (or split).")
