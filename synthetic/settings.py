"""Settings of the synthetic stage (the `synthetic:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SyntheticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run the synthesize stage inside `corpus run`.")
    model: str = Field("", description="Hub id or local path of the generator model.")
    target: int = Field(0, ge=0, description="Dialogues attempted.")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="One classifier threshold for every dimension.")
