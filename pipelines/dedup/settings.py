"""Settings of the dedup stage (the `dedup:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run MinHash near-duplicate removal.")
    n_grams: int = Field(5, ge=1, description="Word n-gram (shingle) size of the MinHash signatures.")
    num_buckets: int = Field(
        14, ge=1, description="LSH bands; with hashes_per_bucket=8 the similarity threshold is about 0.72."
    )
    hashes_per_bucket: int = Field(8, ge=1, description="MinHash values per LSH band.")
    seed: int = Field(1, description="Seed of the MinHash permutations; must stay fixed across refreshes.")
    tasks: int = Field(
        0, ge=0, description="Ranks of the signature and filter steps; 0 = one per scored Parquet file."
    )
    workers_per_bucket: int = Field(1, ge=1, description="Ranks per LSH band in the bucket step.")
    tokenizer: str = Field(
        "whitespace",
        description="Word splitter for shingles: 'whitespace' (after datatrove's text normalisation, any "
        "space-delimited language) or a language code for datatrove's tokenizers (needs spaCy).",
    )
