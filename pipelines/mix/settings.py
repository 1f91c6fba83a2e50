"""Settings of the mix stage (the `mix:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_epochs: int = Field(
        4,
        ge=1,
        le=32767,
        description="Hard cap on copies of one document (Muennighoff et al. 2023). At most 32767: the output "
        "column repeat_index (0 .. copies-1) is int16.",
    )
    seed: int = Field(
        0,
        description="Seed of the deterministic shuffle and of the fractional-copy choice (any integer: it is "
        "hashed into SipHash keys).",
    )
    token_budget: int | None = Field(
        None,
        gt=0,
        description="Mixture size in tokens; tier factors are scaled to reach it (None: profile factors).",
    )
    top_tier_share: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of mixture tokens from the top tier, for profiles that set none (None: from factors).",
    )
    shard_mb: float = Field(
        256.0, gt=0, description="Target uncompressed size of one output Parquet shard, in MB (estimated)."
    )
    row_group_rows: int = Field(10_000, ge=1, description="Rows per Parquet row group in the output shards.")
    blocksize: str = Field(
        "64MB", description="Input partition size for Dask's read_parquet (bounds the memory of one task)."
    )

    @field_validator("blocksize")
    @classmethod
    def _a_size(cls, value: str) -> str:
        """Checked at load: Dask would reject it only when the mix starts, after curate and dedup."""
        from dask.utils import parse_bytes

        try:
            if parse_bytes(value) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError(f"expected a positive size such as 64MB or 512KiB, got {value!r}") from None
        return value
