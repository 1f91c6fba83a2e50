"""Settings of publishing and refresh (the `publish:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PublishConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    retention: int = Field(5, ge=1, description="Published versions kept; `latest` is never deleted.")
    license: list[str] = Field(
        default_factory=list,
        description="Hugging Face licence id(s) for the dataset card (e.g. [odc-by]); empty: detected from the "
        "LICENSE files next to the inputs (pipelines.stats.licenses).",
    )
