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
    shard_batches_max: int = Field(
        32,
        ge=1,
        description="Kept-shard batches of the refresh state before they are folded into one batch of large "
        "files (each refresh adds one; every refresh re-mixes them all).",
    )
    shard_file_mb: int = Field(
        256, ge=1, description="Uncompressed size of one file of a folded kept-shard batch, in MB."
    )
    license: list[str] = Field(
        default_factory=list,
        description="Hugging Face licence id(s) for the dataset card (e.g. [odc-by]); empty: detected from the "
        "LICENSE files next to the inputs (pipelines.stats.licenses).",
    )
