"""Settings of the dedup stage (the `dedup:` section of the run config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from classifiers.yamlconfig import did_you_mean

WHITESPACE = "whitespace"


def _tokenizer_codes() -> dict:
    """datatrove's word-tokenizer factories by language code (read from its tokenizer_assignment.csv)."""
    from datatrove.utils.word_tokenizers import load_tokenizer_assignments

    return load_tokenizer_assignments()


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run MinHash near-duplicate removal.")
    n_grams: int = Field(5, ge=1, description="Word n-gram (shingle) size of the MinHash signatures.")
    num_buckets: int = Field(
        14, ge=1, description="LSH bands; with hashes_per_bucket=8 the similarity threshold is about 0.72."
    )
    hashes_per_bucket: int = Field(8, ge=1, description="MinHash values per LSH band.")
    seed: int = Field(
        1,
        ge=0,
        lt=2**32,
        description="Seed of the MinHash permutations (0 .. 2**32-1, numpy's RandomState range); must stay "
        "fixed across refreshes.",
    )
    tasks: int = Field(
        0, ge=0, description="Ranks of the signature and filter steps; 0 = one per scored Parquet file."
    )
    workers_per_bucket: int = Field(1, ge=1, description="Ranks per LSH band in the bucket step.")
    tokenizer: str = Field(
        WHITESPACE,
        description="Word splitter for shingles: 'whitespace' (after datatrove's text normalisation, any "
        "space-delimited language) or a language code datatrove assigns a word tokenizer to (en, de, zh, "
        "eng_Latn, ...; most need spaCy, some another package).",
    )

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str, info: ValidationInfo) -> str:
        """A typo or a missing package would otherwise surface only when the signature step starts, in a
        worker, with datatrove's message that does not name the key."""
        if value == WHITESPACE:
            return value
        codes = _tokenizer_codes()
        if value not in codes:
            raise ValueError(
                "expected 'whitespace' or a language code with a datatrove word tokenizer (e.g. en, de, zh, "
                f"eng_Latn), got {value!r}{did_you_mean(value, [WHITESPACE, *codes], n=3)}"
            )
        if info.data.get("enabled", True):
            try:  # construction checks the tokenizer's package (pythainlp, kiwipiepy, stanza...), loads nothing
                codes[value]()
            except ImportError as exc:
                raise ValueError(f"{value!r} needs a package that is not installed: {exc}") from None
        return value
