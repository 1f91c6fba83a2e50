"""Settings of publishing and refresh (the `publish:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PublishConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    retention: int = Field(5, ge=1, description="Published versions kept; `latest` is never deleted.")
    index_max_files: int = Field(
        16,
        ge=1,
        description="Files per LSH bucket of the refresh state's MinHash index before they are merged into one "
        "(each refresh adds one; the bucket step opens them all at once).",
    )
    license: list[str] = Field(
        default_factory=list,
        description="Hugging Face licence id(s) for the dataset card (e.g. [odc-by]); empty: detected from the "
        "LICENSE files next to the inputs (pipelines.stats.licenses).",
    )
